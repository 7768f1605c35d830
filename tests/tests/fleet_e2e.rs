//! End-to-end tests of the fleet kill switch and of emergency stops under load, on the
//! real local cluster with real bot processes. Each test gets its own namespaces and
//! operators (single-namespace mode, the chart's RBAC, so the chart's read access to
//! the operator's own Namespace is proven sufficient).
//!
//! - the label `trading.iq720.io/emergency-stop=true` on a Namespace stops every bot in
//!   it (flat, zero replicas, the conditions say it was the fleet switch), a bot in
//!   another namespace keeps trading, and removing the label recovers them;
//! - an emergency stop is not queued behind routine polls of hanging bots (the
//!   operator runs with one routine slot, and the hanging bots' polls hold it);
//! - `BENCH fleet_stop`: N bots stopped at once, by patching `spec.emergencyStop` in one
//!   loop and by the namespace label; per-bot latency from the patch to "flat recorded
//!   AND replicas 0", watched; p99 ≤ 5 s. N from `IQ720_FLEET_N` (default 20).
//!
//! The tests of this file run one at a time (they measure latencies).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bots::*;
use common::{Operator, bot_api};
use futures::StreamExt;
use iq720_crds::TradingBot;
use iq720_crds::trading_bot::TradingBotPhase;
use iq720_tests::{apply_yaml, container_pid, poll_until};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

const FLEET_LABEL: &str = "trading.iq720.io/emergency-stop";

/// One test at a time: the latencies measured must not include another test's load.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn label_namespace(e: &Env, value: Value) {
    Api::<Namespace>::all(e.cluster.client.clone())
        .patch(
            e.ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {FLEET_LABEL: value}}})),
        )
        .await
        .unwrap();
}

fn ready_reason(b: &TradingBot) -> Option<String> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

fn stopped_message(b: &TradingBot) -> String {
    b.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "EmergencyStopped"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Flat recorded: the stop has an outcome and no position may remain open.
fn flat_recorded(b: &TradingBot) -> bool {
    stop_completed(b)
        && b.status
            .as_ref()
            .and_then(|s| s.emergency_stop.as_ref())
            .is_some_and(|e| !e.positions_may_remain)
}

async fn replicas(e: &Env, name: &str) -> Option<i32> {
    Api::<StatefulSet>::namespaced(e.cluster.client.clone(), e.ns.name())
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas)
}

async fn wait_replicas(e: &Env, name: &str, want: Option<i32>) {
    let sets: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    poll_until(
        &format!("{name} replicas {want:?}"),
        DEADLINE,
        Duration::from_millis(100),
        || {
            let sets = sets.clone();
            async move {
                let got = sets
                    .get_opt(name)
                    .await
                    .ok()?
                    .and_then(|s| s.spec)
                    .and_then(|s| s.replicas);
                (got == want).then_some(())
            }
        },
    )
    .await
    .unwrap();
}

async fn halted(e: &Env, name: &str) -> bool {
    let (addr, token) = bot_addr_token(e, name).await;
    let (code, s) = bot_api(&addr, &token, "GET", "/api/v1/status", "").await;
    assert_eq!(code, 200, "{name} status: {s}");
    s["halted"].as_bool().unwrap()
}

/// Creates `names` and waits until every one is `Running`.
async fn create_running(e: &Env, names: &[String], op: &Operator) {
    for name in names {
        apply_yaml(&e.cluster.client, Some(e.ns.name()), &bot_yaml(name, ""))
            .await
            .unwrap();
    }
    let api = bots(e);
    let want = names.len();
    let deadline = DEADLINE + Duration::from_secs(2 * want as u64);
    poll_until(
        &format!("{want} bots Running"),
        deadline,
        Duration::from_millis(500),
        || {
            let api = api.clone();
            async move {
                let running = api
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|b| phase(b) == Some(TradingBotPhase::Running))
                    .count();
                (running >= want).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "{err}\noperator log tail:\n{}",
            op.log_text()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
}

#[tokio::test]
async fn namespace_label_stops_every_bot_and_removing_it_recovers() {
    let _serial = SERIAL.lock().await;
    let a = env().await;
    let b = env().await;
    let op_a = Operator::start(&a.kubeconfig, a.ns.name(), "fleet-a", &[]).await;
    let op_b = Operator::start(&b.kubeconfig, b.ns.name(), "fleet-b", &[]).await;
    let names: Vec<String> = ["a1", "a2"].iter().map(|s| s.to_string()).collect();
    create_running(&a, &names, &op_a).await;
    apply_running(&b, "b1", "", &op_b).await;

    // 1. the label stops every bot of the namespace
    label_namespace(&a, json!("true")).await;
    for name in &names {
        let bot = wait_bot(&a, name, "fleet-stopped and flat", flat_recorded, &op_a).await;
        assert_eq!(
            ready_reason(&bot).as_deref(),
            Some("FleetEmergencyStop"),
            "{name}: {:?}",
            bot.status
        );
        assert!(
            stopped_message(&bot).starts_with(&format!(
                "fleet emergency stop: namespace {} is labelled {FLEET_LABEL}=true",
                a.ns.name()
            )),
            "{name}: {}",
            stopped_message(&bot)
        );
        assert_eq!(bot.status.as_ref().unwrap().open_positions, Some(0));
        assert!(!bot.spec.emergency_stop, "the spec is not touched");
        wait_replicas(&a, name, Some(0)).await;
        wait_pod_gone(&a, name).await;
        wait_events(&a, name, &["EmergencyStopRequested", "ScaledToZero"]).await;
    }
    // a bot created in the stopped namespace never starts, and is no false alarm
    apply_yaml(&a.cluster.client, Some(a.ns.name()), &bot_yaml("a3", ""))
        .await
        .unwrap();
    let a3 = wait_bot(&a, "a3", "new bot stopped", flat_recorded, &op_a).await;
    assert_eq!(ready_reason(&a3).as_deref(), Some("FleetEmergencyStop"));
    assert!(
        matches!(replicas(&a, "a3").await, None | Some(0)),
        "a bot created in a stopped namespace must not run"
    );
    assert!(bot_pod(&a, "a3").await.is_none());

    // 2. the bot in the other namespace keeps trading
    let other = bots(&b).get("b1").await.unwrap();
    assert_eq!(phase(&other), Some(TradingBotPhase::Running));
    assert!(other.status.as_ref().unwrap().emergency_stop.is_none());
    assert_eq!(replicas(&b, "b1").await, Some(1));
    assert!(!halted(&b, "b1").await, "b1 must keep trading");

    // 3. removing the label recovers them (as spec.emergencyStop: false does)
    label_namespace(&a, Value::Null).await;
    for name in ["a1", "a2", "a3"] {
        let bot = wait_bot(
            &a,
            name,
            "Running after the label is removed",
            |b| {
                phase(b) == Some(TradingBotPhase::Running)
                    && b.status
                        .as_ref()
                        .is_some_and(|s| s.emergency_stop.is_none())
            },
            &op_a,
        )
        .await;
        assert_eq!(
            condition(&bot, "EmergencyStopped").as_deref(),
            Some("False")
        );
        assert_eq!(replicas(&a, name).await, Some(1));
        assert!(!halted(&a, name).await, "{name} must be resumed");
    }
    for name in ["a1", "a2"] {
        assert!(
            events(&a, name).await.iter().any(|r| r == "Resumed"),
            "{name} resumed"
        );
    }
    teardown(a).await;
    teardown(b).await;
    drop((op_a, op_b));
}

#[tokio::test]
async fn emergency_stop_is_not_queued_behind_hanging_polls() {
    let _serial = SERIAL.lock().await;
    let e = env().await;
    // One routine slot: the hanging bots' polls hold it in turn.
    let op = Operator::start(
        &e.kubeconfig,
        e.ns.name(),
        "prio",
        &["--max-concurrent-reconciles", "1"],
    )
    .await;
    let hung: Vec<String> = (1..=4).map(|i| format!("hang{i}")).collect();
    let mut all = hung.clone();
    all.push("target".into());
    create_running(&e, &all, &op).await;
    wait_open_positions(&e, "target", &op).await;

    // Freeze the hanging bots' processes: their API accepts connections and never
    // answers, so every routine poll of them waits for the bot API timeout (3 s).
    let mut pids = Vec::new();
    for name in &hung {
        let pod = bot_pod(&e, name).await.unwrap();
        let pid = container_pid(&pod, "bot").expect("bot pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        pids.push(pid);
    }
    // Let their next polls (every second) start and take the slot; their readiness
    // probes fail only after about 6 s, so they are polled until then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    merge_patch(&e, "target", json!({"emergencyStop": true})).await;
    let stopped = wait_bot(&e, "target", "stopped", flat_recorded, &op).await;
    let flat = t0.elapsed();
    wait_replicas(&e, "target", Some(0)).await;
    let zero = t0.elapsed();
    assert!(
        stopped
            .status
            .as_ref()
            .unwrap()
            .emergency_stop
            .as_ref()
            .unwrap()
            .positions_closed
            .unwrap_or(0)
            >= 1
    );
    println!(
        "BENCH priority_stop: 4 hanging bots, 1 routine slot: patch->flat {:.0} ms, patch->replicas 0 {:.0} ms",
        flat.as_secs_f64() * 1000.0,
        zero.as_secs_f64() * 1000.0
    );
    // The routine slot was really held by a hanging poll while the stop ran: a poll
    // of a frozen bot timed out (3 s) after the stop was done, so it started before.
    poll_until(
        "a poll of a hanging bot that overlapped the stop",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let log = op.log_text();
            async move { overlapping_hung_poll(&log).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", op.log_text()));
    // A stop waiting behind them would take one bot API timeout (3 s) or more.
    assert!(
        zero < Duration::from_millis(2000),
        "the stop waited behind routine polls: {zero:?}"
    );

    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    teardown(e).await;
    drop(op);
}

/// In the operator's JSON log: a poll of a `hang*` bot timed out within the bot API
/// timeout (3 s) after the emergency stop of `target` was done, i.e. it held the
/// routine slot while the stop ran.
fn overlapping_hung_poll(log: &str) -> bool {
    let parsed: Vec<(k8s_openapi::jiff::Timestamp, Value)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["timestamp"].as_str()?.parse().ok()?, v["fields"].clone())))
        .collect();
    let Some(stop) = parsed.iter().find_map(|(t, f)| {
        (f["message"] == "emergency stop done" && f["bot"] == "target").then_some(*t)
    }) else {
        return false;
    };
    parsed.iter().any(|(t, f)| {
        f["message"] == "bot API call failed"
            && f["bot"].as_str().is_some_and(|b| b.starts_with("hang"))
            && f["error"].as_str().is_some_and(|e| e.contains("timed out"))
            && *t > stop
            && t.duration_since(stop) <= k8s_openapi::jiff::SignedDuration::from_secs(3)
    })
}

/// When each bot was first seen flat (recorded) and at zero replicas.
#[derive(Default)]
struct Seen {
    flat: HashMap<String, Instant>,
    zero: HashMap<String, Instant>,
}

/// Watches the namespace's TradingBots and StatefulSets, recording when each bot is
/// first flat-recorded and first at zero replicas.
fn watch_stops(e: &Env) -> (Arc<Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let bots_api = bots(e);
    let sets: Api<StatefulSet> = Api::namespaced(e.cluster.client.clone(), e.ns.name());
    let s1 = seen.clone();
    let t1 = tokio::spawn(async move {
        let mut stream = watcher(bots_api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) = ev
                && flat_recorded(&b)
            {
                s1.lock()
                    .unwrap()
                    .flat
                    .entry(b.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    let s2 = seen.clone();
    let t2 = tokio::spawn(async move {
        let mut stream = watcher(sets, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = ev
                && s.spec.as_ref().and_then(|s| s.replicas) == Some(0)
            {
                s2.lock()
                    .unwrap()
                    .zero
                    .entry(s.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    (seen, vec![t1, t2])
}

/// Waits until every bot is flat and at zero replicas; per-bot latencies from its
/// patch, sorted.
async fn latencies(
    seen: &Arc<Mutex<Seen>>,
    patched: &HashMap<String, Instant>,
    op: &Operator,
) -> Vec<Duration> {
    let n = patched.len();
    let until = Instant::now() + Duration::from_secs(60 + n as u64);
    loop {
        {
            let s = seen.lock().unwrap();
            let done = patched
                .keys()
                .filter(|k| s.flat.contains_key(*k) && s.zero.contains_key(*k))
                .count();
            if done == n {
                let mut v: Vec<Duration> = patched
                    .iter()
                    .map(|(k, t0)| s.flat[k].max(s.zero[k]).saturating_duration_since(*t0))
                    .collect();
                v.sort();
                return v;
            }
            assert!(
                Instant::now() < until,
                "only {done}/{n} bots flat and at zero replicas; operator log tail:\n{}",
                op.log_text()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(how: &str, v: &[Duration]) -> Duration {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = percentile(v, 99.0);
    println!(
        "BENCH fleet_stop {how} n={} min={:.0}ms p50={:.0}ms p99={:.0}ms max={:.0}ms",
        v.len(),
        ms(v[0]),
        ms(percentile(v, 50.0)),
        ms(p99),
        ms(*v.last().unwrap())
    );
    p99
}

/// What the machine, the operator and the apiserver spent during a stop: to tell which
/// one bounds it (printed beside the latencies).
struct Spent {
    started: Instant,
    machine: (u64, u64),
    operator: u64,
    commands: HashMap<String, u64>,
    writes: iq720_tests::harness::apiserver_metrics::WriteCounts,
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime of every process, summed by command name (`/proc/<pid>/comm`).
fn ticks_by_command() -> HashMap<String, u64> {
    let mut by = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        *by.entry(comm.trim().to_string()).or_default() += process_ticks(Some(pid));
    }
    by
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl Spent {
    async fn start(e: &Env, op: &Operator) -> Self {
        Spent {
            writes: iq720_tests::harness::apiserver_metrics::apiserver_writes(&e.cluster.client)
                .await
                .unwrap_or_default(),
            started: Instant::now(),
            machine: machine_jiffies(),
            operator: process_ticks(op.child.id()),
            commands: ticks_by_command(),
        }
    }

    async fn report(self, how: &str, e: &Env, op: &Operator) {
        let wall = self.started.elapsed().as_secs_f64();
        let (busy, total) = machine_jiffies();
        let machine = (busy - self.machine.0) as f64 / (total - self.machine.1).max(1) as f64;
        // clock ticks are 100 per second on Linux (USER_HZ)
        let operator = (process_ticks(op.child.id()) - self.operator) as f64 / 100.0;
        let after = iq720_tests::harness::apiserver_metrics::apiserver_writes(&e.cluster.client)
            .await
            .unwrap_or_default();
        let grown = iq720_tests::harness::apiserver_metrics::grown(&self.writes, &after);
        // CPU seconds by command (processes that ended in the window are not counted)
        let mut spent: Vec<(String, f64)> = ticks_by_command()
            .into_iter()
            .map(|(c, t)| {
                let before = self.commands.get(&c).copied().unwrap_or(0);
                (c, t.saturating_sub(before) as f64 / 100.0)
            })
            .filter(|(_, s)| *s >= 0.1)
            .collect();
        spent.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!(
            "BENCH fleet_stop {how} cpu_seconds: {}",
            spent
                .iter()
                .map(|(c, s)| format!("{c}={s:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "BENCH fleet_stop {how} window={wall:.1}s machine_busy={:.0}% operator_cpu={operator:.1}s ({:.0}% of one core) apiserver writes: {}",
            machine * 100.0,
            operator / wall * 100.0,
            iq720_tests::harness::apiserver_metrics::describe(&grown)
        );
    }
}

fn fleet_n() -> usize {
    std::env::var("IQ720_FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test]
async fn bench_fleet_stop_p99_within_5s() {
    let _serial = SERIAL.lock().await;
    let n = fleet_n();
    let names: Vec<String> = (0..n).map(|i| format!("f{i:03}")).collect();

    // 1. N bots stopped by patching spec.emergencyStop in one loop
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "bench-spec", &[]).await;
    create_running(&e, &names, &op).await;
    let (seen, tasks) = watch_stops(&e);
    let spent = Spent::start(&e, &op).await;
    let mut patched = HashMap::new();
    let api = bots(&e);
    for name in &names {
        patched.insert(name.clone(), Instant::now());
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"emergencyStop": true}})),
        )
        .await
        .unwrap();
    }
    let v = latencies(&seen, &patched, &op).await;
    let p99_spec = report("by=spec", &v);
    spent.report("by=spec", &e, &op).await;
    tasks.iter().for_each(|t| t.abort());
    teardown(e).await;
    drop(op);

    // 2. N bots stopped by the namespace label
    let e = env().await;
    let op = Operator::start(&e.kubeconfig, e.ns.name(), "bench-ns", &[]).await;
    create_running(&e, &names, &op).await;
    let (seen, tasks) = watch_stops(&e);
    let spent = Spent::start(&e, &op).await;
    let t0 = Instant::now();
    label_namespace(&e, json!("true")).await;
    println!(
        "BENCH fleet_stop by=namespace label patched in {} ms (at {})",
        t0.elapsed().as_millis(),
        jiff::Timestamp::now()
    );
    let patched: HashMap<String, Instant> = names.iter().map(|n| (n.clone(), t0)).collect();
    let v = latencies(&seen, &patched, &op).await;
    let p99_ns = report("by=namespace", &v);
    spent.report("by=namespace", &e, &op).await;
    tasks.iter().for_each(|t| t.abort());
    teardown(e).await;
    drop(op);

    assert!(
        p99_spec <= Duration::from_secs(5),
        "spec stops p99 {p99_spec:?}"
    );
    assert!(
        p99_ns <= Duration::from_secs(5),
        "namespace stops p99 {p99_ns:?}"
    );
}
