//! The figures of one run: a table on stdout and the same as JSON.

use serde::Serialize;

use crate::latency::Percentiles;

/// CPU time this process has used so far (every thread, user and system),
/// in seconds, from `/proc/self/stat` (clock ticks of 10 ms). Unlike a
/// rate, CPU per task hardly depends on what else the machine runs.
pub fn process_cpu_secs() -> f64 {
    stat_cpu_secs(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds (user + system) of the process's threads named
/// `tasklane-spool` (the LMDB writer of each open endpoint): the part of
/// tasklane's CPU that a client without a spool does not spend. Read while
/// the endpoint is open (a thread that ended is no longer listed).
pub fn spool_thread_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == "tasklane-spool"))
        .map(|t| stat_cpu_secs(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_secs(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// CPU seconds over a span: the whole process, and of it the spool thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSpan {
    pub process: f64,
    pub spool: f64,
}

impl CpuSpan {
    /// The CPU spent since `start` (from [`CpuSpan::now`]).
    pub fn since(start: CpuSpan) -> CpuSpan {
        let now = CpuSpan::now();
        CpuSpan { process: now.process - start.process, spool: now.spool - start.spool }
    }

    /// The counters as they are now.
    pub fn now() -> CpuSpan {
        CpuSpan { process: process_cpu_secs(), spool: spool_thread_cpu_secs() }
    }
}

/// Throughput of one scenario over its rounds, in tasks per second, and the
/// process's CPU time per task in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rate {
    pub runs: Vec<f64>,
    pub cpu_us_per_task: Vec<f64>,
    /// Of it, the spool thread's (tasklane's sides only).
    pub spool_cpu_us_per_task: Vec<f64>,
}

impl Rate {
    pub fn push(&mut self, tasks: usize, secs: f64, cpu_secs: f64) {
        self.runs.push(tasks as f64 / secs);
        self.cpu_us_per_task.push(cpu_secs * 1e6 / tasks as f64);
    }

    /// A tasklane run: its CPU split into the process's and the spool
    /// thread's.
    pub fn push_split(&mut self, tasks: usize, secs: f64, cpu: CpuSpan) {
        self.push(tasks, secs, cpu.process);
        self.spool_cpu_us_per_task.push(cpu.spool * 1e6 / tasks as f64);
    }

    /// The median run (the rounds are few, and one disturbed by another
    /// build on the machine should not move the figure).
    pub fn median(&self) -> Option<f64> {
        median(&self.runs)
    }

    /// The median CPU time per task.
    pub fn median_cpu_us(&self) -> Option<f64> {
        median(&self.cpu_us_per_task)
    }

    /// The median CPU time per task of the spool thread.
    pub fn median_spool_cpu_us(&self) -> Option<f64> {
        median(&self.spool_cpu_us_per_task)
    }
}

fn median(runs: &[f64]) -> Option<f64> {
    let mut v = runs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A tasklane side against its raw reference.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub name: &'static str,
    pub raw_name: &'static str,
    pub raw_per_s: Option<f64>,
    pub tasklane_per_s: Option<f64>,
    pub ratio: Option<f64>,
    /// The ratio the issue asks for.
    pub target: f64,
    pub met: Option<bool>,
    pub raw_runs: Vec<f64>,
    pub tasklane_runs: Vec<f64>,
    /// Process CPU time per task (median), raw and tasklane.
    pub raw_cpu_us: Option<f64>,
    pub tasklane_cpu_us: Option<f64>,
    /// Of tasklane's, the spool thread's (median).
    pub tasklane_spool_cpu_us: Option<f64>,
    /// tasklane's CPU per task over raw's.
    pub cpu_ratio: Option<f64>,
    /// The most CPU ratio the issue allows, where it sets one.
    pub cpu_target: Option<f64>,
    pub cpu_met: Option<bool>,
}

impl Comparison {
    pub fn new(name: &'static str, raw_name: &'static str, raw: &Rate, tasklane: &Rate, target: f64) -> Self {
        let (r, t) = (raw.median(), tasklane.median());
        let ratio = r.zip(t).map(|(r, t)| t / r);
        Self {
            name,
            raw_name,
            raw_per_s: r,
            tasklane_per_s: t,
            ratio,
            target,
            met: ratio.map(|x| x >= target),
            raw_runs: raw.runs.clone(),
            tasklane_runs: tasklane.runs.clone(),
            raw_cpu_us: raw.median_cpu_us(),
            tasklane_cpu_us: tasklane.median_cpu_us(),
            tasklane_spool_cpu_us: tasklane.median_spool_cpu_us(),
            cpu_ratio: tasklane.median_cpu_us().zip(raw.median_cpu_us()).map(|(t, r)| t / r),
            cpu_target: None,
            cpu_met: None,
        }
    }

    /// With a ceiling on tasklane's CPU per task over raw's.
    pub fn cpu_target(mut self, ceiling: f64) -> Self {
        self.cpu_target = Some(ceiling);
        self.cpu_met = self.cpu_ratio.map(|r| r <= ceiling);
        self
    }
}

/// A raw consume figure of its own (one ack mode).
#[derive(Clone, Debug, Serialize)]
pub struct RawConsume {
    pub name: &'static str,
    pub per_s: Option<f64>,
    pub runs: Vec<f64>,
    pub cpu_us: Option<f64>,
}

impl RawConsume {
    pub fn new(name: &'static str, rate: &Rate) -> Self {
        Self { name, per_s: rate.median(), runs: rate.runs.clone(), cpu_us: rate.median_cpu_us() }
    }
}

/// tasklane's full pipe on one kind of queue, against the classic queue of
/// the single node in the same rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Replication {
    pub name: &'static str,
    pub per_s: Option<f64>,
    pub runs: Vec<f64>,
    /// Against the single node's classic queue.
    pub ratio: Option<f64>,
    /// Against the single node's quorum queue: what replication costs.
    pub ratio_quorum: Option<f64>,
    pub cpu_us: Option<f64>,
}

impl Replication {
    pub fn new(name: &'static str, rate: &Rate, single_classic: &Rate, single_quorum: &Rate) -> Self {
        let against = |base: &Rate| rate.median().zip(base.median()).map(|(r, s)| r / s);
        Self {
            name,
            per_s: rate.median(),
            runs: rate.runs.clone(),
            ratio: against(single_classic),
            ratio_quorum: against(single_quorum),
            cpu_us: rate.median_cpu_us(),
        }
    }
}

/// Handoff latency of one side under one load.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub side: &'static str,
    pub load: String,
    pub percentiles: Percentiles,
    /// For tasklane at 1,000 tasks/s: p99 at most this many ms.
    pub p99_target_ms: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub tasks: usize,
    pub rounds: usize,
    pub prefetch: u16,
    pub window: usize,
    pub body_bytes: usize,
    pub rabbitmq: String,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub settings: Settings,
    /// Raw consume figures that have no tasklane counterpart of their own.
    pub raw_consume: Vec<RawConsume>,
    pub comparisons: Vec<Comparison>,
    /// The full pipe on a quorum queue, single node and 3-node cluster.
    pub replication: Vec<Replication>,
    pub latency: Vec<LatencyRow>,
}

fn per_s(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.0}", x))
}

fn us(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.0}", x))
}

fn us1(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}", x))
}

impl Report {
    /// The table, as markdown (it goes into the README as is).
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "N = {} tasks of {} bytes, prefetch {}, {} unconfirmed at most, median of {} rounds, RabbitMQ {}\n\n",
            s.tasks, s.body_bytes, s.prefetch, s.window, s.rounds, s.rabbitmq
        );
        out += "| scenario | raw amqprs (tasks/s) | tasklane (tasks/s) | tasklane/raw | target | CPU µs/task raw, tasklane (spool thread) | CPU tasklane/raw | target |\n";
        out += "|---|---:|---:|---:|---|---:|---:|---|\n";
        for r in &self.raw_consume {
            out += &format!("| raw consume, {} | {} | | | | {} | | |\n", r.name, per_s(r.per_s), us(r.cpu_us));
        }
        for c in &self.comparisons {
            let ratio = c.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
            let mark = match c.met {
                Some(true) => " met",
                Some(false) => " MISSED",
                None => "",
            };
            let cpu_ratio = c.cpu_ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
            let cpu_target = match (c.cpu_target, c.cpu_met) {
                (Some(t), Some(true)) => format!("<= {t:.2} met"),
                (Some(t), Some(false)) => format!("<= {t:.2} MISSED"),
                _ => String::new(),
            };
            out += &format!(
                "| {} (raw: {}) | {} | {} | {} | >= {:.2}{} | {}, {} ({}) | {} | {} |\n",
                c.name,
                c.raw_name,
                per_s(c.raw_per_s),
                per_s(c.tasklane_per_s),
                ratio,
                c.target,
                mark,
                us(c.raw_cpu_us),
                us(c.tasklane_cpu_us),
                us1(c.tasklane_spool_cpu_us),
                cpu_ratio,
                cpu_target
            );
        }
        if !self.replication.is_empty() {
            out += "\n| full pipe, consume to confirm (tasklane) | tasks/s | vs single node, classic | vs single node, quorum | CPU µs/task |\n";
            out += "|---|---:|---:|---:|---:|\n";
            let ratio = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.2}"));
            for r in &self.replication {
                out += &format!(
                    "| {} | {} | {} | {} | {} |\n",
                    r.name,
                    per_s(r.per_s),
                    ratio(r.ratio),
                    ratio(r.ratio_quorum),
                    us(r.cpu_us)
                );
            }
        }
        if !self.latency.is_empty() {
            out += "\n| latency | load | samples | p50 ms | p99 ms | max ms | target |\n";
            out += "|---|---|---:|---:|---:|---:|---|\n";
            for l in &self.latency {
                let p = l.percentiles;
                let target = match (l.p99_target_ms, l.met) {
                    (Some(t), Some(true)) => format!("p99 <= {t} met"),
                    (Some(t), Some(false)) => format!("p99 <= {t} MISSED"),
                    _ => String::new(),
                };
                out += &format!(
                    "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
                    l.side, l.load, p.samples, p.p50_ms, p.p99_ms, p.max_ms, target
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_holding_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_cpu_secs(stat), 3.0, "(250 + 50) ticks of 1/100 s");
    }

    #[test]
    fn the_spool_threads_cpu_is_found_by_the_threads_name() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        let spool = std::thread::Builder::new()
            .name("tasklane-spool".into())
            .spawn(move || {
                while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let since = std::time::Instant::now();
        while spool_thread_cpu_secs() < 0.05 {
            assert!(since.elapsed() < std::time::Duration::from_secs(20), "a spinning tasklane-spool thread not seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spool.join().unwrap();
    }

    #[test]
    fn the_cpu_ratio_is_tasklane_over_raw_and_its_ceiling_is_marked() {
        let mut raw = Rate::default();
        raw.push(1000, 1.0, 0.004);
        let mut lane = Rate::default();
        lane.push_split(1000, 1.0, CpuSpan { process: 0.010, spool: 0.003 });
        let c = Comparison::new("pipe", "raw pipe", &raw, &lane, 0.85).cpu_target(1.5);
        assert!((c.cpu_ratio.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(c.cpu_met, Some(false));
        assert!((c.tasklane_spool_cpu_us.unwrap() - 3.0).abs() < 1e-9);
        let report = Report {
            settings: Settings {
                tasks: 1000,
                rounds: 1,
                prefetch: 1,
                window: 1,
                body_bytes: 256,
                rabbitmq: "x".into(),
            },
            raw_consume: Vec::new(),
            comparisons: vec![c],
            replication: Vec::new(),
            latency: Vec::new(),
        };
        assert!(report.table().contains("| 4, 10 (3.0) | 2.50 | <= 1.50 MISSED |"), "{}", report.table());
    }
}
