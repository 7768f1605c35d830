#!/usr/bin/env python3
"""Grow a bot's trade database to a target size with synthetic closed trades.

Usage: tests/scripts/seed-trades.py <trades.db> <target-bytes>

The database must already exist with the bot's own schema (the bot created it at its
first start, `bot/src/store/migrations.rs`); this only inserts rows into `trades`, in
batches of one transaction each, so it is safe next to a running bot (SQLite WAL, the
bot's 5 s busy timeout). Rows are closed trades with pseudo-random figures and close
dates in 2024, so they do not show up in the bot's recent-period statistics.
Prints the final file size in bytes.
"""
import os
import sqlite3
import sys

BATCH = 200_000

INSERT = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO trades (pair, side, is_open, amount, stake_amount, open_rate, open_date,
                    fee_open, close_rate, close_date, fee_close, close_profit,
                    close_profit_abs, exit_reason, strategy, max_rate)
SELECT CASE abs(random()) % 4 WHEN 0 THEN 'BTC/USDT' WHEN 1 THEN 'ETH/USDT'
                              WHEN 2 THEN 'SOL/USDT' ELSE 'XRP/USDT' END,
       'long', 0,
       (abs(random()) % 1000000) / 10000.0,
       (abs(random()) % 10000000) / 100.0,
       20000 + (abs(random()) % 5000000) / 100.0,
       1704067200000 + abs(random()) % 31536000000,
       0.001,
       20000 + (abs(random()) % 5000000) / 100.0,
       1704067200000 + abs(random()) % 31536000000,
       0.001,
       ((abs(random()) % 20000) - 10000) / 100000.0,
       ((abs(random()) % 200000) - 100000) / 100.0,
       CASE abs(random()) % 3 WHEN 0 THEN 'roi' WHEN 1 THEN 'stop_loss' ELSE 'exit_signal' END,
       'rsi',
       20000 + (abs(random()) % 5000000) / 100.0
FROM n
"""


def size(conn: sqlite3.Connection) -> int:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    return pages * page_size


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, target = sys.argv[1], int(sys.argv[2])
    if not os.path.exists(path):
        print(f"{path}: no such database (start the bot once first)", file=sys.stderr)
        return 1
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version < 1:
        print(f"{path}: schema version {version}, not a bot database", file=sys.stderr)
        return 1
    while size(conn) < target:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, (BATCH,))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(size(conn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
