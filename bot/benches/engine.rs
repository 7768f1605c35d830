//! Engine hot-path benchmarks: simulated market data → strategy → risk → paper broker.
//!
//! `cargo bench -p iq720-bot --bench engine` runs the criterion groups and then prints a
//! tick-to-decision latency distribution (p50/p99/p99.9/max over 2,000,000 ticks).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput};
use iq720_bot::config::Config;
use iq720_bot::engine::{Engine, Restored};
use iq720_bot::feed::failover::FeedManager;
use iq720_bot::feed::simulator::Simulator;
use std::hint::black_box;
use std::time::Instant;

const PAIRS: usize = 5;
const BATCH: u64 = 100_000;

fn config() -> Config {
    Config::from_yaml(
        "pairs: [BTC/USDT, ETH/USDT, SOL/USDT, ADA/USDT, XRP/USDT]\n\
         strategy: {name: rsiMacdBollinger}\n\
         risk: {maxPositions: 3, maxDrawdownPercent: 100, dailyLossLimitPercent: 100}\n\
         marketData: {primary: {kind: simulator, seed: 7, volatility: 0.002}}\n",
    )
    .unwrap()
}

fn engine(cfg: &Config) -> Engine {
    let (kind, params) = cfg.strategy.resolve().unwrap();
    Engine::new(cfg, kind, params, Restored::default(), 0)
}

/// Run `n` events through simulator + engine; returns trades opened (to keep it honest).
fn run_core(
    sim: &mut Simulator,
    eng: &mut Engine,
    events: &mut Vec<iq720_bot::engine::EngineEvent>,
    n: u64,
    t0: i64,
) -> usize {
    let mut opened = 0;
    for i in 0..n {
        let pair = (i % PAIRS as u64) as usize;
        let px = sim.next_price(pair).unwrap_or(100.0);
        eng.on_tick(pair, px, t0 + i as i64, events);
        if events.len() > 1024 {
            opened += events.len();
            events.clear();
        }
    }
    opened + events.len()
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("simulator_strategy_risk_broker_5_pairs", |b| {
        let mut sim = Simulator::new(&cfg.market_data.primary, PAIRS);
        let mut eng = engine(&cfg);
        let mut events = Vec::with_capacity(2048);
        let mut t = 0i64;
        b.iter(|| {
            t += BATCH as i64;
            black_box(run_core(&mut sim, &mut eng, &mut events, BATCH, t))
        });
    });
    g.bench_function("feed_manager_strategy_risk_broker_5_pairs", |b| {
        let mut feed = FeedManager::new(&cfg.market_data, &cfg.pairs, 0).unwrap();
        let mut eng = engine(&cfg);
        let mut ticks = Vec::with_capacity(PAIRS);
        let mut events = Vec::with_capacity(2048);
        let mut now = 0u64;
        b.iter(|| {
            // BATCH / PAIRS polls of all 5 pairs = BATCH events
            for _ in 0..BATCH / PAIRS as u64 {
                now += 1;
                ticks.clear();
                feed.poll(now, PAIRS, &mut ticks);
                feed.evaluate(now);
                for &(pair, px) in &ticks {
                    eng.on_tick(pair, px, now as i64, &mut events);
                }
                if events.len() > 1024 {
                    events.clear();
                }
            }
            black_box(events.len())
        });
    });
    g.finish();
}

fn latency_report() {
    let cfg = config();
    let mut sim = Simulator::new(&cfg.market_data.primary, PAIRS);
    let mut eng = engine(&cfg);
    let mut events = Vec::with_capacity(2048);
    // warm up indicators and caches
    run_core(&mut sim, &mut eng, &mut events, 100_000, 0);
    let n = 2_000_000usize;
    let mut lat = Vec::with_capacity(n);
    let mut decisions = 0usize;
    for i in 0..n {
        let pair = i % PAIRS;
        let px = sim.next_price(pair).unwrap_or(100.0);
        let t0 = Instant::now();
        let d = eng.on_tick(pair, px, 100_000 + i as i64, &mut events);
        lat.push(t0.elapsed().as_nanos() as u64);
        if d != iq720_bot::engine::Decision::Hold {
            decisions += 1;
        }
        if events.len() > 1024 {
            events.clear();
        }
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((n as f64 * p) as usize).min(n - 1)];
    println!(
        "tick_to_decision (strategy+risk+broker, {n} ticks, 5 pairs, {decisions} non-hold decisions): \
         p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        q(0.50),
        q(0.99),
        q(0.999),
        lat[n - 1]
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    // Only in real bench runs (`cargo bench` passes --bench), not `cargo test --benches`.
    if std::env::args().any(|a| a == "--bench") {
        latency_report();
    }
}
