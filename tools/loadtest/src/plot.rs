//! SVG plots of reports, drawn with plotters on its SVG backend: the latency percentile
//! spectrum (log-log, each step on the x axis ten times rarer) and throughput over time, one
//! line per report, with a legend under the panels.
//!
//! Text is laid out with plotters' own estimate of glyph widths, without its `ttf` feature:
//! that one reads system fonts through font-kit and needs fontconfig, and an SVG's text is set
//! by the viewer's fonts anyway.

use std::path::Path;

use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::{Report, SPECTRUM};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 380;
/// The strip under the panels that holds the legend.
const LEGEND_HEIGHT: u32 = 36;
const FONT: &str = "sans-serif";
/// Font sizes in plotters' units (the SVG gets 1/1.24 of them: 12 and 15 px).
const TEXT_SIZE: f64 = 15.0;
const TITLE_SIZE: f64 = 18.6;
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];
/// The names of the [`SPECTRUM`] quantiles on the x axis; `max` follows the last.
const STEP_NAMES: [&str; SPECTRUM.len()] = ["p50", "p90", "p99", "p99.9", "p99.99", "p99.999"];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A chart of one panel, with the x and y coordinates `X` and `Y` make.
type Chart<'a, 'b, X, Y> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<<X as AsRangedCoord>::CoordDescType, <Y as AsRangedCoord>::CoordDescType>,
>;

/// Writes the plot of `reports` to `path`.
pub fn write(path: &Path, title: &str, reports: &[Report]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg(title, reports)?)?;
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

/// x position of quantile `q` on the spectrum axis: its place in [`SPECTRUM`] (p50 = 0 ...
/// p99.999 = 5), so that from p90 on each step is ten times rarer; the maximum (q = 1), and
/// any quantile not in the list, sits at `max_at`, one step after the last quantile plotted.
fn spectrum_x(q: f64, max_at: usize) -> f64 {
    SPECTRUM.iter().position(|s| (s - q).abs() < 1e-12).unwrap_or(max_at) as f64
}

fn text_style() -> TextStyle<'static> {
    TextStyle::from((FONT, TEXT_SIZE).into_font())
}

/// The plot as one SVG document.
pub fn svg(title: &str, reports: &[Report]) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FONT, TITLE_SIZE))?;
        let (panels, legend) = body.split_vertically(body.dim_in_pixel().1 - LEGEND_HEIGHT);
        let (left, right) = panels.split_horizontally(WIDTH / 2);
        latency_panel(&left, reports)?;
        throughput_panel(&right, reports)?;
        draw_legend(&legend, reports)?;
        root.present()?;
    }
    Ok(out)
}

/// A row of colour marks and labels, one per report.
fn draw_legend(area: &Area, reports: &[Report]) -> anyhow::Result<()> {
    let mut x = 60;
    for (i, r) in reports.iter().enumerate() {
        let text = label(r, reports);
        area.draw(&Rectangle::new([(x, 14), (x + 14, 18)], COLORS[i % COLORS.len()].filled()))?;
        area.draw(&Text::new(text.clone(), (x + 18, 10), text_style()))?;
        // plotters' estimate of the label's width, and a gap.
        let width = area.estimate_text_size(&text, &text_style())?.0;
        x += 30 + i32::try_from(width).unwrap_or(i32::MAX / 2);
    }
    Ok(())
}

/// A chart of `x` by `y` filling `area` under `caption`, with room for the axes' labels (the
/// right margin holds half of the last x label).
fn panel<'a, 'b, X: AsRangedCoord, Y: AsRangedCoord>(
    area: &'a Area<'b>,
    caption: &str,
    x: X,
    y: Y,
) -> anyhow::Result<Chart<'a, 'b, X, Y>> {
    Ok(ChartBuilder::on(area)
        .caption(caption, text_style())
        .margin(10)
        .margin_right(30)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d(x, y)?)
}

/// A panel with a caption and axes but nothing to plot, saying so when `note` is given.
fn empty_panel(area: &Area, caption: &str, note: Option<&str>) -> anyhow::Result<()> {
    let mut chart = panel(area, caption, 0f64..1f64, 0f64..1f64)?;
    chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).draw()?;
    if let Some(note) = note {
        let centre = text_style().pos(Pos::new(HPos::Center, VPos::Center));
        chart.plotting_area().draw(&Text::new(note.to_string(), (0.5, 0.5), centre))?;
    }
    Ok(())
}

fn latency_panel(area: &Area, reports: &[Report]) -> anyhow::Result<()> {
    let caption = "latency by percentile (ms, log scale)";
    let with: Vec<(usize, &Report)> =
        reports.iter().enumerate().filter(|(_, r)| !r.spectrum.is_empty()).collect();
    if with.is_empty() {
        return empty_panel(area, caption, Some("no latency samples"));
    }
    // One step after the last quantile any report has.
    let max_at = with
        .iter()
        .flat_map(|(_, r)| {
            r.spectrum.iter().filter(|(q, _)| *q < 1.0).map(|(q, _)| spectrum_x(*q, 0) as usize + 1)
        })
        .max()
        .unwrap_or(0);
    let values = with.iter().flat_map(|(_, r)| r.spectrum.iter().map(|(_, us)| (*us).max(1) as f64));
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_dec, hi_dec) = ((lo.log10()).floor(), (hi.log10()).ceil().max(lo.log10().floor() + 1.0));
    // Ticks fall on whole steps (the axis asks for one per step); others stay unlabelled.
    let x_label = |x: &f64| match (x.fract() == 0.0, *x as usize) {
        (false, _) => String::new(),
        (true, i) if i >= max_at => "max".to_string(),
        (true, i) => STEP_NAMES.get(i).map_or_else(String::new, |n| n.to_string()),
    };
    let y_label = |us: &f64| {
        let ms = us / 1000.0;
        if ms >= 1.0 {
            format!("{ms:.0}")
        } else {
            format!("{ms}")
        }
    };
    let mut chart =
        panel(area, caption, 0f64..max_at as f64, (10f64.powf(lo_dec)..10f64.powf(hi_dec)).log_scale())?;
    chart
        .configure_mesh()
        .label_style(text_style())
        .light_line_style(TRANSPARENT)
        .x_labels(max_at + 1)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .draw()?;
    for (i, r) in with {
        let points = r.spectrum.iter().map(|(q, us)| (spectrum_x(*q, max_at), (*us).max(1) as f64));
        chart.draw_series(LineSeries::new(points, COLORS[i % COLORS.len()].stroke_width(2)))?;
    }
    Ok(())
}

fn throughput_panel(area: &Area, reports: &[Report]) -> anyhow::Result<()> {
    let caption = "throughput over time (events/s)";
    let t_max = reports.iter().flat_map(|r| r.timeline.last().map(|(t, _)| *t)).fold(0.0, f64::max);
    let r_max = reports.iter().flat_map(|r| r.timeline.iter().map(|(_, v)| *v)).fold(0.0, f64::max);
    if t_max <= 0.0 || r_max <= 0.0 {
        return empty_panel(area, caption, None);
    }
    let r_top = nice(r_max * 1.1);
    let mut chart = panel(area, caption, 0f64..t_max, 0f64..r_top)?;
    chart
        .configure_mesh()
        .label_style(text_style())
        .light_line_style(TRANSPARENT)
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|t| format!("{t:.1} s"))
        .y_label_formatter(&|v| si(*v))
        .draw()?;
    for (i, r) in reports.iter().enumerate() {
        if r.timeline.is_empty() {
            continue;
        }
        // Steps: each bucket's rate held over the bucket.
        let mut points = Vec::with_capacity(2 * r.timeline.len());
        let mut prev = 0.0;
        for (t, v) in &r.timeline {
            points.push((prev, *v));
            points.push((*t, *v));
            prev = *t;
        }
        chart.draw_series(LineSeries::new(points, COLORS[i % COLORS.len()].stroke_width(2)))?;
    }
    Ok(())
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

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').and_then(|(_, rest)| rest.split_once("</text>")))
            .map(|(text, _)| text.trim().to_string())
            .collect()
    }

    /// The plot is one well-formed SVG with a line per report in each panel and a legend.
    #[test]
    fn plot_has_a_line_per_report() {
        let svg = svg("produce <100 B>", &[report("silt", 100), report("nats", 300)]).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for colour in ["#1F77B4", "#D62728"] {
            let lines = svg.lines().filter(|l| l.starts_with("<polyline") && l.contains(colour)).count();
            assert_eq!(lines, 2, "one {colour} line in each panel");
        }
        assert!(svg.contains("&lt;100 B&gt;"), "the title is escaped");
        let labels = texts(&svg);
        for text in ["produce &lt;100 B&gt;", "silt", "nats", "p50", "p90", "p99.9", "max", "2.0 s"] {
            assert!(labels.iter().any(|t| t == text), "no text {text:?} in {labels:?}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        let empty = svg_of_nothing();
        assert!(texts(&empty).iter().any(|t| t == "no latency samples"));
    }

    fn svg_of_nothing() -> String {
        let mut r = Report::new("replay", 10, 0.0, Duration::from_secs(1), &histogram());
        r.timeline = vec![(1.0, 10.0)];
        svg("replay", &[r]).unwrap()
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
