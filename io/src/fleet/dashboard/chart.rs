//! Server-rendered SVG: the fleet's throughput over the last minutes and
//! each endpoint's spool depths. No JavaScript; the page reloads itself.

use maud::{html, Markup};

use crate::fleet::FleetMember;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 20.0;

/// A number for an axis label: `1.2k` beyond a thousand.
fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Bars of results completed per second, oldest bin left, `window_secs`
/// wide in all.
pub fn throughput(bins: &[f64], window_secs: u64) -> Markup {
    let max = bins.iter().copied().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - 8.0;
    let bar_w = plot_w / bins.len().max(1) as f64;
    let minutes = window_secs / 60;
    html! {
        svg id="throughput" xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(HEIGHT)
            viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(format!("results per second over the last {minutes} minutes, at most {}", short(max))) {
            line x1=(LEFT) y1=(8) x2=(LEFT) y2=(8.0 + plot_h) class="axis" {}
            line x1=(LEFT) y1=(8.0 + plot_h) x2=(WIDTH - 8.0) y2=(8.0 + plot_h) class="axis" {}
            text x=(LEFT - 6.0) y=(14) text-anchor="end" class="label" { (short(top)) "/s" }
            text x=(LEFT - 6.0) y=(8.0 + plot_h) text-anchor="end" class="label" { "0" }
            text x=(LEFT) y=(HEIGHT - 4.0) class="label" { "-" (minutes) " min" }
            text x=(WIDTH - 8.0) y=(HEIGHT - 4.0) text-anchor="end" class="label" { "now" }
            @for (i, v) in bins.iter().enumerate() {
                @let h = plot_h * v / top;
                rect class="bar" x=(format!("{:.1}", LEFT + i as f64 * bar_w + 1.0)) y=(format!("{:.1}", 8.0 + plot_h - h))
                    width=(format!("{:.1}", (bar_w - 2.0).max(1.0))) height=(format!("{h:.1}")) {
                    title { (format!("{v:.1}")) " results/s" }
                }
            }
        }
    }
}

/// One row per endpoint process: its inbox and outbox as bars on a common
/// scale, labelled with the endpoint id (and the pid, where an id runs
/// twice).
pub fn spool_depths(members: &[FleetMember]) -> Markup {
    let twice = |m: &FleetMember| members.iter().filter(|o| o.endpoint() == m.endpoint()).count() > 1;
    let max = members.iter().map(|m| m.report().spool.inbox.max(m.report().spool.outbox)).max().unwrap_or(0).max(1);
    let row_h = 22.0;
    let height = row_h * members.len() as f64 + 6.0;
    let label_w = 160.0;
    let bar_max = (WIDTH - label_w - 80.0) / 2.0;
    html! {
        svg id="spool-depths" xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(height)
            viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="spool depths per endpoint" {
            @for (i, m) in members.iter().enumerate() {
                @let y = 4.0 + i as f64 * row_h;
                @let spool = &m.report().spool;
                @let inbox_w = bar_max * spool.inbox as f64 / max as f64;
                @let outbox_w = bar_max * spool.outbox as f64 / max as f64;
                text x=(0) y=(y + 14.0) class="label" {
                    (m.endpoint()) @if twice(m) { " (pid " (m.report().pid) ")" }
                }
                rect class="inbox" x=(label_w) y=(y + 3.0) width=(format!("{inbox_w:.1}")) height=(8) {
                    title { "inbox " (spool.inbox) }
                }
                rect class="outbox" x=(label_w) y=(y + 12.0) width=(format!("{outbox_w:.1}")) height=(8) {
                    title { "outbox " (spool.outbox) }
                }
                text x=(label_w + bar_max + 8.0) y=(y + 14.0) class="label" {
                    (spool.inbox) " in / " (spool.outbox) " out"
                    @if let Some(full) = &spool.full { " — full: " (full) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_bin() {
        let svg = throughput(&[0.0, 5.0, 10.0], 300).into_string();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains("-5 min"), "{svg}");
        assert!(svg.contains("10.0 results/s"), "{svg}");
        assert_eq!(short(12_345.0), "12k");
        assert_eq!(short(1_234.0), "1.2k");
    }
}
