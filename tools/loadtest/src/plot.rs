//! SVG plots of reports: the latency percentile spectrum (log-log, each step on the x axis ten
//! times rarer) and throughput over time, one line per report. Plain SVG, no dependencies.

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::Report;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 380.0;
const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;
const TOP: f64 = 50.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Writes the plot of `reports` to `path`.
pub fn write(path: &Path, title: &str, reports: &[Report]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg(title, reports))?;
    Ok(())
}

/// What a line is called: the target, and the scenario when the reports differ in it.
fn label(r: &Report, reports: &[Report]) -> String {
    if reports.iter().all(|o| o.scenario == r.scenario) {
        r.target.clone()
    } else {
        format!("{} {}", r.target, r.scenario)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// x position of quantile `q` on the spectrum axis, in steps (0 = p50 ... 5 = p99.999);
/// the maximum sits one step after the last quantile.
fn spectrum_step(q: f64, last: f64) -> f64 {
    if q >= 1.0 {
        last + 1.0
    } else {
        (1.0 / (1.0 - q)).log10() - 2f64.log10()
    }
}

pub fn svg(title: &str, reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    latency_panel(&mut out, reports, 60.0);
    throughput_panel(&mut out, reports, 560.0);
    // Legend under the panels.
    let mut x = 60.0;
    for (i, r) in reports.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let text = escape(&label(r, reports));
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="14" height="4" fill="{color}"/><text x="{tx}" y="{ty}">{text}</text>"#,
            y = HEIGHT - 22.0,
            tx = x + 18.0,
            ty = HEIGHT - 16.0
        );
        x += 30.0 + 7.0 * text.len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

fn frame(out: &mut String, left: f64, title: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        left + PANEL_W / 2.0,
        TOP - 8.0,
        escape(title)
    );
}

fn latency_panel(out: &mut String, reports: &[Report], left: f64) {
    frame(out, left, "latency by percentile (ms, log scale)");
    let with: Vec<(usize, &Report)> =
        reports.iter().enumerate().filter(|(_, r)| !r.spectrum.is_empty()).collect();
    if with.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no latency samples</text>"#,
            left + PANEL_W / 2.0,
            TOP + PANEL_H / 2.0
        );
        return;
    }
    let last = with
        .iter()
        .flat_map(|(_, r)| r.spectrum.iter().filter(|(q, _)| *q < 1.0).map(|(q, _)| spectrum_step(*q, 0.0)))
        .fold(0.0, f64::max);
    let steps = last + 1.0;
    let values = with.iter().flat_map(|(_, r)| r.spectrum.iter().map(|(_, us)| (*us).max(1) as f64));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_dec, hi_dec) = ((lo.log10()).floor(), (hi.log10()).ceil().max(lo.log10().floor() + 1.0));
    let x = |step: f64| left + PANEL_W * step / steps;
    let y = |us: f64| TOP + PANEL_H * (1.0 - (us.max(1.0).log10() - lo_dec) / (hi_dec - lo_dec));
    // Axes: decades of latency, and the percentile steps.
    let mut d = lo_dec;
    while d <= hi_dec {
        let yy = y(10f64.powf(d));
        let ms = 10f64.powf(d) / 1000.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 4.0,
            yy + 4.0,
            if ms >= 1.0 { format!("{ms:.0}") } else { format!("{ms}") }
        );
        d += 1.0;
    }
    let names = ["p50", "p90", "p99", "p99.9", "p99.99", "p99.999"];
    for (i, name) in names.iter().enumerate().take(last.round() as usize + 1) {
        let xx = x(i as f64);
        let _ = writeln!(
            out,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{name}</text>"#,
            TOP + PANEL_H + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">max</text>"#,
        x(steps),
        TOP + PANEL_H + 16.0
    );
    for (i, r) in with {
        let points: Vec<String> = r
            .spectrum
            .iter()
            .map(|(q, us)| format!("{:.1},{:.1}", x(spectrum_step(*q, last)), y(*us as f64)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
}

fn throughput_panel(out: &mut String, reports: &[Report], left: f64) {
    frame(out, left, "throughput over time (events/s)");
    let t_max = reports.iter().flat_map(|r| r.timeline.last().map(|(t, _)| *t)).fold(0.0, f64::max);
    let r_max = reports.iter().flat_map(|r| r.timeline.iter().map(|(_, v)| *v)).fold(0.0, f64::max);
    if t_max <= 0.0 || r_max <= 0.0 {
        return;
    }
    let r_top = nice(r_max * 1.1);
    let x = |t: f64| left + PANEL_W * t / t_max;
    let y = |v: f64| TOP + PANEL_H * (1.0 - v / r_top);
    for i in 0..=4 {
        let v = r_top * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 4.0,
            y(v) + 4.0,
            si(v),
            yy = y(v)
        );
    }
    for i in 0..=4 {
        let t = t_max * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{t:.1} s</text>"#,
            x(t),
            TOP + PANEL_H + 16.0
        );
    }
    for (i, r) in reports.iter().enumerate() {
        if r.timeline.is_empty() {
            continue;
        }
        // Steps: each bucket's rate held over the bucket.
        let mut points = Vec::new();
        let mut prev = 0.0;
        for (t, v) in &r.timeline {
            points.push(format!("{:.1},{:.1}", x(prev), y(*v)));
            points.push(format!("{:.1},{:.1}", x(*t), y(*v)));
            prev = *t;
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
}

/// A round axis top at or above `v`: 1, 2 or 5 times a power of ten.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(10.0 * p)
}

/// 1500000 as 1.5M.
pub fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", trim(v / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(v / 1e3)),
        v => trim(v),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::histogram;
    use std::time::Duration;

    fn report(target: &str, base: u64) -> Report {
        let mut h = histogram();
        for v in 0..10_000u64 {
            h.record(base + v % 100 + if v % 1000 == 0 { 10_000 } else { 0 }).unwrap();
        }
        let mut r = Report::new("produce", 10_000, 1e6, Duration::from_secs(2), &h);
        r.target = target.into();
        r.timeline = vec![(0.5, 4000.0), (1.0, 6000.0), (1.5, 5000.0), (2.0, 5000.0)];
        r
    }

    /// The plot is one well-formed SVG with a line per report in each panel and a legend.
    #[test]
    fn plot_has_a_line_per_report() {
        let svg = svg("produce <100 B>", &[report("silt", 100), report("nats", 300)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("&lt;100 B&gt;"), "the title is escaped");
        assert!(svg.contains(">silt</text>") && svg.contains(">nats</text>"));
        assert!(svg.contains(">p99.9</text>") && svg.contains(">max</text>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = svg_of_nothing();
        assert!(empty.contains("no latency samples"));
    }

    fn svg_of_nothing() -> String {
        let mut r = Report::new("replay", 10, 0.0, Duration::from_secs(1), &histogram());
        r.timeline = vec![(1.0, 10.0)];
        svg("replay", &[r])
    }

    #[test]
    fn axis_numbers() {
        assert_eq!(nice(0.7), 1.0);
        assert_eq!(nice(130.0), 200.0);
        assert_eq!(nice(4_100_000.0), 5_000_000.0);
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(250_000.0), "250k");
        assert_eq!(si(12.0), "12");
    }
}
