//! Schema migrations, tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Ordered migrations; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: trades (the essentials of freqtrade's table), orders, equity, bot state.
    r#"
    CREATE TABLE trades (
        id               INTEGER PRIMARY KEY,
        pair             TEXT    NOT NULL,
        side             TEXT    NOT NULL DEFAULT 'long',
        is_open          INTEGER NOT NULL,
        amount           REAL    NOT NULL,
        stake_amount     REAL    NOT NULL,
        open_rate        REAL    NOT NULL,
        open_date        INTEGER NOT NULL,
        fee_open         REAL    NOT NULL,
        close_rate       REAL,
        close_date       INTEGER,
        fee_close        REAL,
        close_profit     REAL,
        close_profit_abs REAL,
        exit_reason      TEXT,
        strategy         TEXT    NOT NULL,
        max_rate         REAL
    );
    CREATE UNIQUE INDEX trades_one_open_per_pair ON trades(pair) WHERE is_open = 1;
    CREATE INDEX trades_close_date ON trades(close_date);
    CREATE TABLE orders (
        id         INTEGER PRIMARY KEY,
        trade_id   INTEGER NOT NULL REFERENCES trades(id),
        pair       TEXT    NOT NULL,
        side       TEXT    NOT NULL,
        order_type TEXT    NOT NULL DEFAULT 'market',
        status     TEXT    NOT NULL,
        amount     REAL    NOT NULL,
        price      REAL    NOT NULL,
        filled     REAL    NOT NULL,
        fee        REAL    NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX orders_trade ON orders(trade_id);
    CREATE TABLE equity_snapshots (
        ts             INTEGER PRIMARY KEY,
        equity         REAL    NOT NULL,
        cash           REAL    NOT NULL,
        open_positions INTEGER NOT NULL
    );
    CREATE TABLE bot_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migration a build started with the test/chaos switch `--schema-ahead` applies
/// after [`MIGRATIONS`]: it stands in for a release that migrates the database
/// forward, which the current release then refuses to open (see `crate::chaos`).
pub const AHEAD_MIGRATION: &str = r#"
    CREATE TABLE trade_notes (
        trade_id INTEGER NOT NULL REFERENCES trades(id),
        note     TEXT    NOT NULL
    );
"#;

/// The newest schema this process opens and writes: [`SCHEMA_VERSION`], one more
/// with `--schema-ahead`.
pub fn supported() -> i64 {
    SCHEMA_VERSION + i64::from(crate::chaos::schema_ahead())
}

/// Read `user_version`.
pub fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Apply pending migrations, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<i64, super::StoreError> {
    let v = current_version(conn)?;
    let supported = supported();
    if v > supported {
        return Err(super::StoreError::TooNew {
            found: v,
            supported,
        });
    }
    let ahead = crate::chaos::schema_ahead().then_some(AHEAD_MIGRATION);
    for (i, sql) in MIGRATIONS
        .iter()
        .copied()
        .chain(ahead)
        .enumerate()
        .skip(v.max(0) as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(current_version(conn)?)
}
