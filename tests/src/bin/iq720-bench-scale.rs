//! `iq720-bench-scale`: the measuring half of `make bench-scale` (tests/scripts/bench-scale.sh
//! brings up the cluster, the node agent and the operator, then runs this).
//!
//! Why a program and not shell: it applies N TradingBots concurrently, follows the
//! fleet's convergence stage by stage (StatefulSets, pods, scheduled, running, bot status)
//! to say which component bounds it, samples the operator's RSS and every component's
//! CPU from /proc, and counts write requests with the apiserver's own
//! `apiserver_request_total` (the harness helper the idle-cost e2e test uses).
//!
//! Phases: converge (apply end -> all N Running with figures), running window (trading
//! bots: status write rate, operator CPU while polling), idle window (every bot paused,
//! settled: write requests by verb and resource must be 0).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use iq720_tests::harness::apiserver_metrics::{
    WriteCounts, apiserver_writes, describe, grown, operator_writes,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "iq720-bench-scale",
    about = "Scale benchmark of the IQ-720 operator"
)]
struct Args {
    /// Admin kubeconfig of the bench cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Namespace the bots go to (the operator watches it).
    #[arg(long)]
    namespace: String,
    /// Number of TradingBots.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Process id of the operator.
    #[arg(long)]
    operator_pid: u32,
    /// Metrics address of the operator (host:port), for its reconcile counter.
    #[arg(long)]
    operator_metrics: String,
    /// Other components to measure, `name=pid` (repeatable).
    #[arg(long = "component", value_parser = parse_component)]
    components: Vec<(String, u32)>,
    /// The bot binary: every process running it is a bot (their CPU and RSS are summed).
    #[arg(long)]
    bot_exe: PathBuf,
    /// Seconds to wait for convergence.
    #[arg(long, default_value_t = 900)]
    converge_timeout: u64,
    /// Length of the running-bots window, seconds.
    #[arg(long, default_value_t = 180)]
    run_seconds: u64,
    /// Length of the idle window, seconds.
    #[arg(long, default_value_t = 600)]
    idle_seconds: u64,
    /// Seconds without any TradingBot change that count as settled (before the idle window).
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
    /// Seconds after the pause before the bots may count as settled: the operator's
    /// figures interval (60 s) and one poll (10 s), so that figures deferred when the
    /// bots paused have been written before the idle window (with a shorter wait a
    /// quickly settling fleet, e.g. N=400, showed each bot's deferred write in it).
    #[arg(long, default_value_t = 70)]
    settle_after: u64,
    /// Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u32,
    /// Markdown report written here (also printed).
    #[arg(long)]
    out: PathBuf,
}

fn parse_component(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected name=pid")?;
    let pid = pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?;
    Ok((name.to_string(), pid))
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// utime + stime of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command (which may hold spaces) start after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Fields of a process's `/proc/<pid>/status`, in KiB, in the order named.
fn status_kib<const N: usize>(pid: u32, names: [&str; N]) -> Option<[u64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut values = [0; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())?;
    }
    Some(values)
}

/// (VmRSS, VmHWM) of a process in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let [rss, hwm] = status_kib(pid, ["VmRSS:", "VmHWM:"])?;
    Some((rss, hwm))
}

/// (RssAnon, RssFile) of a process in KiB: heap and stacks, and the mapped pages of
/// its binary and libraries.
fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    let [anon, file] = status_kib(pid, ["RssAnon:", "RssFile:"])?;
    Some((anon, file))
}

/// Pids of the processes running `exe`.
fn bot_pids(exe: &std::path::Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.as_path() == exe)
        })
        .collect()
}

/// CPU ticks of every measured component (and of all bots together) at one moment.
#[derive(Debug, Clone)]
struct CpuSnapshot {
    at: Instant,
    ticks: BTreeMap<String, u64>,
    /// Bot processes by pid, so that bots started or stopped in between do not count
    /// their whole life.
    bots: BTreeMap<u32, u64>,
}

struct Probe {
    components: Vec<(String, u32)>,
    bot_exe: PathBuf,
    tck: f64,
}

impl Probe {
    fn snapshot(&self) -> CpuSnapshot {
        let ticks = self
            .components
            .iter()
            .filter_map(|(n, p)| Some((n.clone(), cpu_ticks(*p)?)))
            .collect();
        let bots = bot_pids(&self.bot_exe)
            .into_iter()
            .filter_map(|p| Some((p, cpu_ticks(p)?)))
            .collect();
        CpuSnapshot {
            at: Instant::now(),
            ticks,
            bots,
        }
    }

    /// Percent of one core per component between two snapshots.
    fn usage(&self, a: &CpuSnapshot, b: &CpuSnapshot) -> BTreeMap<String, f64> {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let pct = |t: u64| t as f64 / self.tck / secs * 100.0;
        let mut out: BTreeMap<String, f64> = self
            .components
            .iter()
            .filter_map(|(n, _)| {
                let d = b.ticks.get(n)?.saturating_sub(*a.ticks.get(n)?);
                Some((n.clone(), pct(d)))
            })
            .collect();
        let bots: u64 = b
            .bots
            .iter()
            .map(|(p, t)| t.saturating_sub(a.bots.get(p).copied().unwrap_or(0)))
            .sum();
        out.insert(format!("bots ({} processes)", b.bots.len()), pct(bots));
        out
    }

    fn bots_rss_mib(&self) -> (usize, f64) {
        let pids = bot_pids(&self.bot_exe);
        let kib: u64 = pids.iter().filter_map(|p| rss_kib(*p)).map(|r| r.0).sum();
        (pids.len(), kib as f64 / 1024.0)
    }
}

fn bot_yaml(name: &str, seed: usize) -> String {
    format!(
        r#"apiVersion: trading.iq720.io/v1alpha1
kind: TradingBot
metadata:
  name: {name}
  labels: {{iq720.io/bench: scale}}
spec:
  version: "0.1.0"
  mode: paper
  exchange: {{name: paper}}
  pairs: ["BTC/USDT", "ETH/USDT"]
  strategy:
    name: rsi-macd-bollinger
    params: {{rsiPeriod: 14, rsiBuy: 30, rsiSell: 70, bbPeriod: 20, bbStdDev: 2}}
  marketData:
    primary: {{type: simulator, seed: {seed}}}
    staleAfter: 30s
  storage: {{size: 64Mi}}
  resources:
    requests: {{cpu: 1m, memory: 16Mi}}
    limits: {{memory: 128Mi}}
"#
    )
}

fn tb_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "trading.iq720.io".into(),
        version: "v1alpha1".into(),
        api_version: "trading.iq720.io/v1alpha1".into(),
        kind: "TradingBot".into(),
        plural: "tradingbots".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn status_of(o: &DynamicObject) -> &Value {
    o.data.get("status").unwrap_or(&Value::Null)
}

/// Running with figures read from the bot.
fn converged(o: &DynamicObject) -> bool {
    let s = status_of(o);
    s.get("phase").and_then(Value::as_str) == Some("Running")
        && s.get("pnl").and_then(Value::as_str).is_some()
}

/// Idle: paused, or halted by its own risk limit (a halted bot opens nothing either,
/// and shows `Halted` rather than `Paused`; at N=1,000 about 15 % of the bots hit
/// their loss limit before the pause).
fn paused_settled(o: &DynamicObject) -> bool {
    matches!(
        status_of(o).get("phase").and_then(Value::as_str),
        Some("Paused" | "Halted")
    )
}

fn halted(o: &DynamicObject) -> bool {
    status_of(o).get("phase").and_then(Value::as_str) == Some("Halted")
}

/// Seconds after `t0` at which each stage first reached N.
#[derive(Debug, Default)]
struct Timeline {
    stages: Vec<(&'static str, Option<f64>, usize)>,
}

impl Timeline {
    fn update(&mut self, stage: &'static str, count: usize, n: usize, secs: f64) {
        match self.stages.iter_mut().find(|s| s.0 == stage) {
            Some(s) => {
                s.2 = count;
                if s.1.is_none() && count >= n {
                    s.1 = Some(secs);
                }
            }
            None => self
                .stages
                .push((stage, (count >= n).then_some(secs), count)),
        }
    }
}

async fn operator_reconciles(addr: &str) -> f64 {
    let Ok(resp) = iq720_tests::http::get(addr, "/metrics").await else {
        return f64::NAN;
    };
    resp.text()
        .lines()
        .filter(|l| l.starts_with("iq720_operator_reconciliations_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Who reported the namespace's Events (the apiserver's counters name no user, so this
/// tells which component the `events` writes came from).
async fn events_summary(client: &Client, ns: &str) -> Fallible<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for e in api.list(&ListParams::default()).await?.items {
        let who = e
            .reporting_controller
            .clone()
            .or_else(|| {
                e.deprecated_source
                    .as_ref()
                    .and_then(|s| s.component.clone())
            })
            .unwrap_or_default();
        let n = e.series.as_ref().map_or(1, |s| i64::from(s.count).max(1));
        *by.entry(format!("{who} {}", e.reason.clone().unwrap_or_default()))
            .or_default() += n;
    }
    Ok(by
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", "))
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("| figure | value |\n|---|---|\n");
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s
}

fn cpu_rows(phase: &str, usage: &BTreeMap<String, f64>, rows: &mut Vec<(String, String)>) {
    let all = usage
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}%"))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push((format!("CPU by component, {phase} (% of one core)"), all));
}

fn writes_rows(
    phase: &str,
    secs: f64,
    before: &WriteCounts,
    after: &WriteCounts,
    rows: &mut Vec<(String, String)>,
) {
    let ops = operator_writes(before, after);
    rows.push((
        format!("operator write requests, {phase} ({secs:.0} s, apiserver_request_total)"),
        describe(&ops),
    ));
    let others: WriteCounts = grown(before, after)
        .into_iter()
        .filter(|(k, _)| !ops.contains_key(k))
        .collect();
    rows.push((
        format!("other write requests, {phase} (not the operator's kinds)"),
        describe(&others),
    ));
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    match bench(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "benchmark failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(args: Args) -> Fallible<()> {
    iq720_tests::install_crypto_provider();
    let kc = Kubeconfig::read_from(&args.kubeconfig)?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.read_timeout = Some(Duration::from_secs(120));
    let client = Client::try_from(config)?;
    let ns = args.namespace.as_str();
    let n = args.count;
    let mut components = args.components.clone();
    components.insert(0, ("operator".to_string(), args.operator_pid));
    let probe = Probe {
        components,
        bot_exe: args.bot_exe.clone(),
        tck: f64::from(args.clk_tck),
    };
    let op_pid = args.operator_pid;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut peak_rss_kib = 0u64;
    let sample_rss = |peak: &mut u64| -> u64 {
        let (rss, hwm) = rss_kib(op_pid).unwrap_or((0, 0));
        *peak = (*peak).max(hwm);
        rss
    };
    let rss_empty = sample_rss(&mut peak_rss_kib);
    let split_empty = rss_split_kib(op_pid).unwrap_or((0, 0));

    // ------------------------------------------------------------- apply N bots
    let bots = tb_api(&client, ns);
    let pp = PatchParams::apply("iq720-bench").force();
    let cpu0 = probe.snapshot();
    let t_apply0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let bots = bots.clone();
            let pp = pp.clone();
            async move {
                let name = format!("bench-{i:04}");
                let obj: DynamicObject = serde_yaml::from_str(&bot_yaml(&name, i + 1))?;
                bots.patch(&name, &pp, &Patch::Apply(&obj)).await?;
                Fallible::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let t0 = Instant::now();
    let apply_secs = t0.duration_since(t_apply0).as_secs_f64();
    tracing::info!(n, apply_secs, "applied");

    // ------------------------------------------------------------- converge
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().match_any();
    let mut tl = Timeline::default();
    let deadline = t0 + Duration::from_secs(args.converge_timeout);
    let converge_secs = loop {
        let secs = t0.elapsed().as_secs_f64();
        sample_rss(&mut peak_rss_kib);
        let sts = sts_api.list_metadata(&lp).await?.items.len();
        let pods = pod_api.list(&lp).await?.items;
        let scheduled = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let ready = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        let tbs = bots.list(&lp).await?.items;
        let done = tbs.iter().filter(|b| converged(b)).count();
        tl.update("StatefulSets created (operator)", sts, n, secs);
        tl.update(
            "pods created (kube-controller-manager)",
            pods.len(),
            n,
            secs,
        );
        tl.update("pods scheduled (kube-scheduler)", scheduled, n, secs);
        tl.update("pods Ready (node agent + bot)", ready, n, secs);
        tl.update("status Running with figures (operator)", done, n, secs);
        tracing::info!(
            secs = format!("{secs:.0}"),
            sts,
            pods = pods.len(),
            scheduled,
            ready,
            converged = done,
            "converging"
        );
        if done >= n {
            break Some(secs);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let cpu1 = probe.snapshot();
    let rss_converged = sample_rss(&mut peak_rss_kib);
    rows.push((
        "bots applied (server-side apply, 16 at once)".into(),
        format!("{n} in {apply_secs:.1} s"),
    ));
    rows.push((
        "converge: apply end -> all Running with figures".into(),
        match converge_secs {
            Some(s) => format!("{s:.0} s"),
            None => format!("NOT converged within {} s", args.converge_timeout),
        },
    ));
    for (stage, at, count) in &tl.stages {
        rows.push((
            format!("  stage: {stage}"),
            match at {
                Some(s) => format!("all {n} after {s:.0} s"),
                None => format!("{count}/{n} at the end"),
            },
        ));
    }
    cpu_rows("apply + converge", &probe.usage(&cpu0, &cpu1), &mut rows);

    // ------------------------------------------------------------- running window
    let rec0 = operator_reconciles(&args.operator_metrics).await;
    let w0 = apiserver_writes(&client).await?;
    let cpu_r0 = probe.snapshot();
    let run_end = Instant::now() + Duration::from_secs(args.run_seconds);
    while Instant::now() < run_end {
        sample_rss(&mut peak_rss_kib);
        tokio::time::sleep(Duration::from_secs(5).min(run_end - Instant::now())).await;
    }
    let cpu_r1 = probe.snapshot();
    let w1 = apiserver_writes(&client).await?;
    let rec1 = operator_reconciles(&args.operator_metrics).await;
    let rss_running = sample_rss(&mut peak_rss_kib);
    let run_secs = cpu_r1.at.duration_since(cpu_r0.at).as_secs_f64();
    let run_usage = probe.usage(&cpu_r0, &cpu_r1);
    let status_writes: f64 = operator_writes(&w0, &w1)
        .iter()
        .filter(|(k, _)| k.resource == "tradingbots" && k.subresource == "status")
        .map(|(_, v)| v)
        .sum();
    rows.push((
        format!("running bots: status writes ({run_secs:.0} s window)"),
        format!(
            "{status_writes} = {:.1}/s = {:.2} per bot per minute",
            status_writes / run_secs,
            status_writes / run_secs * 60.0 / n as f64
        ),
    ));
    rows.push((
        "running bots: operator reconciles (polls)".into(),
        format!("{:.0} = {:.1}/s", rec1 - rec0, (rec1 - rec0) / run_secs),
    ));
    rows.push((
        "running bots: operator CPU (% of one core)".into(),
        format!(
            "{:.1}%",
            run_usage.get("operator").copied().unwrap_or(f64::NAN)
        ),
    ));
    writes_rows("running window", run_secs, &w0, &w1, &mut rows);
    cpu_rows("running window", &run_usage, &mut rows);

    // ------------------------------------------------------------- idle window
    tracing::info!("pausing every bot");
    futures::stream::iter(0..n)
        .map(|i| {
            let bots = bots.clone();
            async move {
                let name = format!("bench-{i:04}");
                let p = json!({"spec": {"paused": true}});
                bots.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await?;
                Fallible::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let t_pause = Instant::now();
    let settle_deadline = t_pause + Duration::from_secs(args.converge_timeout);
    let mut last: Vec<Option<String>> = Vec::new();
    let mut same_since = Instant::now();
    let mut halted_bots: usize;
    let settled = loop {
        let items = bots.list(&lp).await?.items;
        let paused = items.iter().filter(|b| paused_settled(b)).count();
        halted_bots = items.iter().filter(|b| halted(b)).count();
        let now: Vec<_> = items
            .into_iter()
            .map(|b| b.metadata.resource_version)
            .collect();
        if now != last {
            last = now;
            same_since = Instant::now();
        }
        if paused >= n
            && same_since.elapsed() >= Duration::from_secs(args.settle_seconds)
            && t_pause.elapsed() >= Duration::from_secs(args.settle_after)
        {
            break true;
        }
        if Instant::now() > settle_deadline {
            break false;
        }
        sample_rss(&mut peak_rss_kib);
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    rows.push((
        "idle: pause -> all Paused (or Halted by risk) and no TradingBot change".into(),
        if settled {
            format!(
                "{:.0} s (settled = {} s without a change, at least {} s after the pause; {halted_bots} Halted by their risk limit)",
                t_pause.elapsed().as_secs_f64(),
                args.settle_seconds,
                args.settle_after
            )
        } else {
            "did NOT settle (measured anyway)".to_string()
        },
    ));
    let rec0 = operator_reconciles(&args.operator_metrics).await;
    let w0 = apiserver_writes(&client).await?;
    let cpu_i0 = probe.snapshot();
    let idle_end = Instant::now() + Duration::from_secs(args.idle_seconds);
    let mut rss_idle_min = u64::MAX;
    while Instant::now() < idle_end {
        rss_idle_min = rss_idle_min.min(sample_rss(&mut peak_rss_kib));
        tokio::time::sleep(Duration::from_secs(5).min(idle_end - Instant::now())).await;
    }
    let cpu_i1 = probe.snapshot();
    let w1 = apiserver_writes(&client).await?;
    let rec1 = operator_reconciles(&args.operator_metrics).await;
    let rss_idle = sample_rss(&mut peak_rss_kib);
    let split_idle = rss_split_kib(op_pid).unwrap_or((0, 0));
    let idle_secs = cpu_i1.at.duration_since(cpu_i0.at).as_secs_f64();
    let idle_usage = probe.usage(&cpu_i0, &cpu_i1);
    writes_rows("idle window", idle_secs, &w0, &w1, &mut rows);
    rows.push((
        "idle bots: operator reconciles (polls)".into(),
        format!("{:.0} = {:.1}/s", rec1 - rec0, (rec1 - rec0) / idle_secs),
    ));
    rows.push((
        "idle bots: operator CPU polling (% of one core)".into(),
        format!(
            "{:.1}%",
            idle_usage.get("operator").copied().unwrap_or(f64::NAN)
        ),
    ));
    cpu_rows("idle window", &idle_usage, &mut rows);

    rows.push((
        "Events in the bench namespace by reporter/reason (count incl. series)".into(),
        events_summary(&client, ns)
            .await
            .unwrap_or_else(|e| format!("cannot list: {e}")),
    ));
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    rows.push((
        "operator RSS: before bots / converged / running / idle (end)".into(),
        format!(
            "{} / {} / {} / {}",
            mib(rss_empty),
            mib(rss_converged),
            mib(rss_running),
            mib(rss_idle)
        ),
    ));
    rows.push(("operator RSS peak (VmHWM)".into(), mib(peak_rss_kib)));
    rows.push((
        "operator RSS anonymous + file-backed (RssAnon + RssFile): before bots / idle (end)".into(),
        format!(
            "{} + {} / {} + {}",
            mib(split_empty.0),
            mib(split_empty.1),
            mib(split_idle.0),
            mib(split_idle.1)
        ),
    ));
    let (procs, bots_mib) = probe.bots_rss_mib();
    rows.push((
        "bot processes (real iq720-bot) and their RSS".into(),
        format!(
            "{procs} processes, {bots_mib:.0} MiB total, {:.1} MiB each",
            bots_mib / procs.max(1) as f64
        ),
    ));
    let report = format!("## bench-scale N={n}\n\n{}", table(&rows));
    println!("{report}");
    std::fs::write(&args.out, report)?;
    Ok(())
}
