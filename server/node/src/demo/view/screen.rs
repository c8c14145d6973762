//! The demo's screen on a terminal, drawn with ratatui on its crossterm backend: the header,
//! ingest rates, a table of processors, the faults injected, the latest alerts and the
//! smoothed values of a few devices, redrawn in place each interval.
//!
//! The terminal stays in its normal mode (no raw mode, no alternate screen), so that Ctrl-C is
//! still SIGINT, which the demo handles, and the last screen stays above the summary printed at
//! the end. Everything fits 80x24: the alerts and the smoothed values share the rows the fixed
//! part leaves, and the last row is left to the cursor.

use std::io::Stdout;
use std::time::Instant;

use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::{Constraint, Position, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use silt_client::ProcessorState;
use silt_devsim::series::{Cause, Kind};

use super::lines::{clock, count, state, z_text};
use super::{cause_label, Seen, View, RECENT_ALERTS};

/// Rows above the alerts: header (2), ingest (2), processors' header and faults, with the
/// blank rows between them; processors and their errors come on top.
const FIXED_ROWS: usize = 2 + 1 + 2 + 1 + 1 + 1 + 1 + 1;
/// Rows of the alerts' and the smoothed values' headers, and the blank row between them.
const SHARED_HEADER_ROWS: usize = 3;
/// The hint on how to connect, after a blank row.
const HINT_ROWS: usize = 2;

/// The terminal the view is drawn on.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Takes over stdout, a terminal: clears it; the view is drawn from its top.
    pub fn new() -> std::io::Result<Screen> {
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        // Through the backend: `Terminal::clear` first asks the terminal where its cursor is,
        // which a pseudo-terminal with nothing behind it (`script`, CI) never answers.
        terminal.backend_mut().clear()?;
        Ok(Screen { terminal })
    }

    /// Draws `view` as of `now`, fitted to the terminal's current size.
    pub fn draw(&mut self, view: &View, now: Instant) {
        // A failed redraw (a terminal gone away) must not stop the demo: the next one retries,
        // and Ctrl-C still ends it cleanly.
        let _ = self.terminal.draw(|frame| draw(frame, view, now));
    }
}

/// How many rows each shared part gets on a screen of `rows` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shares {
    alerts: usize,
    devices: usize,
    hint: bool,
}

impl Shares {
    /// The rows the fixed part (`fixed` rows) leaves go to the alerts first, at least half of
    /// them, then to the smoothed values of `devices` devices; the hint shows when there is
    /// room to spare.
    fn plan(rows: usize, fixed: usize, alerts: usize, devices: usize) -> Shares {
        let usable = rows.saturating_sub(1);
        let left = usable.saturating_sub(fixed + SHARED_HEADER_ROWS);
        let alerts = alerts.min(RECENT_ALERTS).min(left.div_ceil(2).max(left.saturating_sub(devices)));
        let devices = devices.min(left - alerts);
        let used = fixed + SHARED_HEADER_ROWS + alerts + devices;
        Shares { alerts, devices, hint: used + HINT_ROWS < rows }
    }
}

/// Hands out the rows of the screen from the top; parts that do not fit are cut, never
/// squeezed (ratatui's layout solver would shrink earlier parts to fit later ones).
struct Rows {
    area: Rect,
    next: u16,
}

impl Rows {
    fn take(&mut self, rows: usize) -> Rect {
        let y = self.area.y.saturating_add(self.next).min(self.area.bottom());
        let height = u16::try_from(rows).unwrap_or(u16::MAX).min(self.area.bottom() - y);
        self.next = self.next.saturating_add(height);
        Rect { x: self.area.x, y, width: self.area.width, height }
    }

    fn skip(&mut self) {
        self.take(1);
    }
}

fn draw(frame: &mut Frame, v: &View, now: Instant) {
    let area = frame.area();
    let errors: Vec<Line> = v
        .processors
        .iter()
        .filter_map(|(p, _)| p.error.as_ref().map(|e| Line::from(format!("    error: {e}")).red()))
        .collect();
    let devices = v.shown_devices();
    let fixed = FIXED_ROWS + v.processors.len() + errors.len();
    let shares = Shares::plan(usize::from(area.height), fixed, v.recent.len(), devices.len());
    let mut rows = Rows { area, next: 0 };
    frame.render_widget(Paragraph::new(header(v, now)), rows.take(2));
    rows.skip();
    frame.render_widget(Paragraph::new(ingest(v)), rows.take(2));
    rows.skip();
    frame.render_widget(processors(v), rows.take(1 + v.processors.len()));
    frame.render_widget(Paragraph::new(errors), rows.take(fixed - FIXED_ROWS - v.processors.len()));
    rows.skip();
    frame.render_widget(Paragraph::new(faults(v)), rows.take(1));
    rows.skip();
    frame.render_widget(Paragraph::new(alerts_title(v)), rows.take(1));
    frame.render_widget(alerts(v.recent.iter().take(shares.alerts)), rows.take(shares.alerts));
    rows.skip();
    frame.render_widget(smoothed(v, &devices[..shares.devices]), rows.take(1 + shares.devices));
    if shares.hint {
        rows.skip();
        frame.render_widget(Paragraph::new(hint(v)), rows.take(1));
    }
    // The cursor waits under the view, where the summary will be printed.
    let end = area.y.saturating_add(rows.next).min(area.bottom().saturating_sub(1));
    frame.set_cursor_position(Position { x: area.x, y: end });
}

fn title(text: &str) -> Span<'_> {
    Span::from(text).bold()
}

fn header(v: &View, now: Instant) -> Vec<Line<'static>> {
    let h = &v.header;
    vec![
        Line::from(vec![
            Span::from("Silt demo").bold(),
            Span::from(format!(
                " {}: {} devices, {} reading/s each, day {}, seed {} (Ctrl-C stops)",
                clock(v.elapsed(now)),
                h.devices,
                h.rate,
                humantime::format_duration(h.day),
                h.seed
            )),
        ]),
        Line::from(format!("broker {} (QUIC)  metrics {}  frames {}", h.broker, h.admin, h.frames)).dim(),
    ]
}

fn ingest(v: &View) -> Vec<Line<'static>> {
    let topics: Vec<String> =
        v.topics.iter().map(|(t, c)| format!("{t} {:.0}/s ({})", c.per_s, count(c.total))).collect();
    vec![
        Line::from(vec![
            title("INGEST"),
            Span::from(format!(
                "  frames {:.0}/s, {} acked, {}/{} devices connected",
                v.frames.per_s,
                count(v.frames.total),
                v.connected,
                v.header.devices
            )),
        ]),
        Line::from(format!("        {}", topics.join("  "))),
    ]
}

/// A cell with its text against the right edge (numbers).
fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

fn processors(v: &View) -> Table<'static> {
    let header = Row::new(
        ["PROCESSORS", "state"]
            .map(Cell::from)
            .into_iter()
            .chain(["in/s", "in", "out", "lag"].map(|t| right(t.to_string()))),
    )
    .bold();
    let rows = v.processors.iter().map(|(p, c)| {
        let colour = match p.state {
            ProcessorState::Running => Color::Green,
            ProcessorState::Paused => Color::Yellow,
            ProcessorState::Failed => Color::Red,
        };
        Row::new([
            Cell::from(format!("  {}", p.name)),
            Cell::from(state(p.state)).fg(colour),
            right(format!("{:.0}", c.per_s)),
            right(count(p.events_in)),
            right(count(p.events_out)),
            right(count(p.lag)),
        ])
    });
    let widths = [22, 9, 7, 12, 12, 8].map(Constraint::Length);
    Table::new(rows, widths).header(header).column_spacing(0)
}

fn faults(v: &View) -> Line<'static> {
    let f = &v.faults;
    Line::from(vec![
        title("FAULTS"),
        Span::from(format!(
            "  spikes: {} temperature, {} humidity; stuck {}; dropouts {}; drifting {}",
            f.temperature_spikes,
            f.humidity_spikes,
            f.stuck,
            f.dropouts,
            v.sensors.drifting().len()
        )),
    ])
}

fn alerts_title(v: &View) -> Line<'static> {
    let causes: Vec<String> = v.by_cause.iter().map(|(c, n)| format!("{c} {n}")).collect();
    Line::from(vec![
        Span::from(format!("ALERTS {}", count(v.alerts))).bold(),
        Span::from(format!("  {}", causes.join(", "))),
    ])
}

/// The colour of an alert's cause: red for what the detector is for, yellow for a sensor's
/// trouble, magenta for an alert nothing injected explains.
fn cause_style(cause: Option<Cause>) -> Style {
    match cause {
        Some(Cause::Spike) => Style::new().red(),
        Some(_) => Style::new().yellow(),
        None => Style::new().magenta(),
    }
}

/// One row per alert, newest first: when, who, what, against which mean, and why.
fn alerts<'a>(recent: impl Iterator<Item = &'a Seen>) -> Table<'static> {
    let rows = recent.map(|s| {
        let a = &s.alert;
        Row::new([
            right(clock(s.at)).dim(),
            Cell::from(a.device.clone()).bold(),
            Cell::from(a.kind.as_str()),
            right(format!("{:.1}", a.value)),
            Cell::from(a.kind.unit()),
            Cell::from(format!("expected {:>5.1}", a.expected)),
            Cell::from(format!("z {:>6}", z_text(a.z))),
            Cell::from(cause_label(s.cause)).style(cause_style(s.cause)),
        ])
    });
    let widths = [8, 10, 11, 6, 2, 10, 8].map(Constraint::Length).into_iter().chain([Constraint::Fill(1)]);
    Table::new(rows, widths).column_spacing(1)
}

/// A device's smoothed value and last reading of one kind.
fn smoothed_cell(v: &View, kind: Kind, device: &str) -> Cell<'static> {
    match v.smoothed.get(&(kind, device.to_string())) {
        Some((ema, value)) => Cell::from(format!("{ema:.1} {} ({value:.1})", kind.unit())),
        None => Cell::from("-"),
    }
}

fn smoothed(v: &View, devices: &[(String, String)]) -> Table<'static> {
    let header = Row::new(["SMOOTHED", "temperature", "humidity", "(last reading)"]).bold();
    let rows = devices.iter().map(|(device, note)| {
        let note =
            if note.ends_with(" now") { Cell::from(note.clone()).yellow() } else { Cell::from(note.clone()) };
        Row::new([
            Cell::from(format!("  {device}")),
            smoothed_cell(v, Kind::Temperature, device),
            smoothed_cell(v, Kind::Humidity, device),
            note,
        ])
    });
    let widths = [13, 19, 18].map(Constraint::Length).into_iter().chain([Constraint::Fill(1)]);
    Table::new(rows, widths).header(header).column_spacing(0)
}

/// How to watch this broker with `silt` (cut by a narrow terminal).
fn hint(v: &View) -> Line<'static> {
    let h = &v.header;
    Line::from(format!(
        "try: silt --broker {} --ca-cert {} consume sensors.temperature.alerts --follow",
        h.broker,
        h.ca_cert.display()
    ))
    .dim()
}

/// The screen as text, drawn on a terminal of `width` by `height` that is not there.
#[cfg(test)]
pub(super) fn text(v: &View, now: Instant, width: u16, height: u16) -> Vec<String> {
    let mut terminal =
        Terminal::new(ratatui::backend::TestBackend::new(width, height)).expect("a test terminal");
    terminal.draw(|frame| draw(frame, v, now)).expect("drawing");
    let buffer = terminal.backend().buffer();
    (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On 24 rows, with four processors in the fixed part, alerts get at least half of what
    /// is left, the devices the rest, and the hint only spare rows; a tall screen shows all.
    #[test]
    fn rows_are_shared_between_alerts_and_devices() {
        let fixed = FIXED_ROWS + 4;
        assert_eq!(Shares::plan(24, fixed, 6, 6), Shares { alerts: 3, devices: 3, hint: false });
        assert_eq!(Shares::plan(24, fixed, 1, 6), Shares { alerts: 1, devices: 5, hint: false });
        assert_eq!(Shares::plan(24, fixed, 0, 2), Shares { alerts: 0, devices: 2, hint: true });
        assert_eq!(Shares::plan(100, fixed, 9, 6), Shares { alerts: RECENT_ALERTS, devices: 6, hint: true });
        assert_eq!(Shares::plan(10, fixed, 6, 6), Shares { alerts: 0, devices: 0, hint: false });
    }
}
