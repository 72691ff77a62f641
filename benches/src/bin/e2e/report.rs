//! The figures of one run: a table on stdout and the same as JSON.

use serde::Serialize;

use crate::latency::Percentiles;

/// Throughput of one scenario over its rounds, in tasks per second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rate {
    pub runs: Vec<f64>,
}

impl Rate {
    pub fn push(&mut self, tasks: usize, secs: f64) {
        self.runs.push(tasks as f64 / secs);
    }

    /// The median run (the rounds are few, and one disturbed by another
    /// build on the machine should not move the figure).
    pub fn median(&self) -> Option<f64> {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
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
    pub raw_consume: Vec<(&'static str, Option<f64>, Vec<f64>)>,
    pub comparisons: Vec<Comparison>,
    pub latency: Vec<LatencyRow>,
}

fn per_s(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.0}", x))
}

impl Report {
    /// The table, as markdown (it goes into the README as is).
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "N = {} tasks of {} bytes, prefetch {}, {} unconfirmed at most, median of {} rounds, RabbitMQ {}\n\n",
            s.tasks, s.body_bytes, s.prefetch, s.window, s.rounds, s.rabbitmq
        );
        out += "| scenario | raw amqprs (tasks/s) | tasklane (tasks/s) | tasklane/raw | target |\n";
        out += "|---|---:|---:|---:|---|\n";
        for (name, median, _) in &self.raw_consume {
            out += &format!("| raw consume, {name} | {} | | | |\n", per_s(*median));
        }
        for c in &self.comparisons {
            let ratio = c.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
            let mark = match c.met {
                Some(true) => " met",
                Some(false) => " MISSED",
                None => "",
            };
            out += &format!(
                "| {} (raw: {}) | {} | {} | {} | >= {:.2}{} |\n",
                c.name,
                c.raw_name,
                per_s(c.raw_per_s),
                per_s(c.tasklane_per_s),
                ratio,
                c.target,
                mark
            );
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
