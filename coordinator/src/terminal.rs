//! The interactive terminal view: the run's [`LiveView`] redrawn in place on stderr (progress, users, rates, percentiles, errors, endpoints, workers), with notes and logs printed above it.
//!
//! It is used only when both stdout and stderr are terminals, `TERM` is not
//! `dumb` and the run is not `--headless`; otherwise the plain progress line
//! is printed every second as before (tests and CI logs parse it). Drawing is
//! indicatif's: it moves the cursor back over the previous frame and clears
//! it, so the frame must never be wider than the terminal (each line is cut
//! to its width).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::report::{LiveSender, LiveView, Phase};
use crate::worker_text;

/// Endpoint rows shown before the rest are summed up in one line.
const MAX_ENDPOINT_ROWS: usize = 12;
/// Worker rows shown before the rest are counted by state.
const MAX_WORKER_ROWS: usize = 8;

/// The view being drawn, if any: lines printed meanwhile go above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether a run should get the interactive view rather than plain lines.
pub fn wanted(headless: bool) -> bool {
    !headless
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal()
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Prints a line on stderr: above the live view while one is drawn, plainly otherwise.
pub fn note(line: &str) {
    let active = ACTIVE.lock().ok().and_then(|a| a.clone());
    match active {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// A live view drawn on stderr until the run it watches is done.
pub struct LiveTerminal {
    sender: LiveSender,
    task: tokio::task::JoinHandle<()>,
}

impl LiveTerminal {
    /// Starts drawing whatever is published on the returned view's [`LiveTerminal::sender`].
    pub fn start() -> LiveTerminal {
        let (sender, rx) = watch::channel(None);
        Self::draw_from(sender, rx)
    }

    /// Draws what is published on `shared`, which others (`/metrics`) also read.
    pub fn watch(shared: &LiveSender) -> LiveTerminal {
        Self::draw_from(shared.clone(), shared.subscribe())
    }

    fn draw_from(sender: LiveSender, rx: watch::Receiver<Option<Arc<LiveView>>>) -> LiveTerminal {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar.clone());
        }
        let task = tokio::spawn(draw(bar, rx));
        LiveTerminal { sender, task }
    }

    /// Where the run publishes its live view.
    pub fn sender(&self) -> LiveSender {
        self.sender.clone()
    }

    /// Draws the last state and leaves it on screen; later lines go below it.
    /// The drawing ends on the run's `Done` view, or when nobody publishes
    /// any more; a shared sender outlives the run, so a run that ended
    /// without a `Done` view gets a second before the drawing is cut off.
    pub async fn finish(mut self) {
        drop(self.sender);
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
    }
}

/// Redraws on every published view until the run is done or nobody publishes any more.
async fn draw(bar: ProgressBar, mut rx: watch::Receiver<Option<Arc<LiveView>>>) {
    loop {
        if rx.changed().await.is_err() {
            break;
        }
        let Some(view) = rx.borrow_and_update().clone() else {
            continue;
        };
        bar.set_message(render(&view, width()));
        if view.phase == Phase::Done {
            break;
        }
    }
    bar.finish();
}

/// The terminal's width in columns, read again for every frame so a resized
/// window is followed; the same reading indicatif lays the frame out by.
fn width() -> usize {
    usize::from(console::Term::stderr().size().1).max(20)
}

/// One frame of the view, every line at most `width` characters.
pub fn render(v: &LiveView, width: usize) -> String {
    let mut out = String::new();
    let phase = match v.phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Done => "done",
    };
    let mut line = |s: String| {
        out.push_str(&cut(&s, width));
        out.push('\n');
    };
    line(format!(
        "squall  run {}  scenario {}  {phase}",
        v.run_id,
        worker_text::clean(&v.scenario)
    ));
    let share = if v.planned_s > 0.0 {
        (v.elapsed_s / v.planned_s).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let bar_width = 30;
    let filled = (share * bar_width as f64).round() as usize;
    line(format!(
        "[{}{}] {:>5.0}s / {:.0}s  {:>3.0}%",
        "█".repeat(filled),
        "░".repeat(bar_width - filled),
        v.elapsed_s,
        v.planned_s,
        share * 100.0
    ));
    let planned = match v.rate_planned {
        Some(rate) => format!("{} max, {rate:.1}/s planned", v.users_planned),
        None => format!("{} planned", v.users_planned),
    };
    line(format!(
        "users {} / {planned}   rps {:.1}   errors {} ({:.2}%, {:.1}/s)   requests {}",
        v.users,
        v.rps,
        v.total_failures,
        v.error_rate * 100.0,
        v.errors_per_s,
        v.total_requests
    ));
    line(match v.t {
        Some(t) => format!(
            "latency  p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   (second {t}{})",
            v.p50_ms,
            v.p95_ms,
            v.p99_ms,
            if v.complete {
                ""
            } else {
                ", not every worker yet"
            }
        ),
        None => "latency  waiting for the first second".to_owned(),
    });
    line(String::new());
    line(format!(
        "{:<28} {:<6} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "endpoint", "method", "requests", "failures", "rps", "p50 ms", "p95 ms", "p99 ms"
    ));
    for e in v.endpoints.iter().take(MAX_ENDPOINT_ROWS) {
        line(format!(
            "{:<28} {:<6} {:>10} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
            cut(&worker_text::clean(&e.name), 28),
            cut(&worker_text::clean(&e.method), 6),
            e.requests,
            e.failures,
            e.rps,
            e.p50_ms,
            e.p95_ms,
            e.p99_ms
        ));
    }
    if v.endpoints.is_empty() {
        line("(no requests yet)".to_owned());
    } else if v.endpoints.len() > MAX_ENDPOINT_ROWS {
        let rest = &v.endpoints[MAX_ENDPOINT_ROWS..];
        line(format!(
            "… and {} more endpoint(s): {} requests, {} failures",
            rest.len(),
            rest.iter().map(|e| e.requests).sum::<u64>(),
            rest.iter().map(|e| e.failures).sum::<u64>()
        ));
    }
    line(String::new());
    line(format!(
        "{:<28} {:<9} {:>8} {:>6}",
        "worker", "state", "users", "cpu"
    ));
    for w in v.workers.iter().take(MAX_WORKER_ROWS) {
        line(format!(
            "{:<28} {:<9} {:>8} {:>5.0}%",
            cut(&w.id, 28),
            w.state,
            w.users,
            w.cpu_percent
        ));
    }
    if v.workers.len() > MAX_WORKER_ROWS {
        let mut states = std::collections::BTreeMap::<&str, usize>::new();
        for w in &v.workers[MAX_WORKER_ROWS..] {
            *states.entry(w.state.as_str()).or_default() += 1;
        }
        let mut text = format!("… and {} more:", v.workers.len() - MAX_WORKER_ROWS);
        for (s, n) in states {
            let _ = write!(text, " {n} {s}");
        }
        line(text);
    }
    // No trailing newline: indicatif ends the frame itself.
    out.pop();
    out
}

/// `s` cut to `width` characters, with `…` when something was cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A `tracing` writer for stderr that prints above the live view while one is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log event, buffered until it is complete.
#[derive(Debug, Default)]
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            note(text);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::live::{LiveEndpoint, LiveWorker};

    fn view() -> LiveView {
        LiveView {
            run_id: "3f2a1b9c0d1e".into(),
            scenario: "sustained".into(),
            phase: Phase::Running,
            elapsed_s: 12.0,
            planned_s: 30.0,
            t: Some(11),
            complete: true,
            users_planned: 100,
            users: 98,
            rps: 812.0,
            p50_ms: 23.1,
            p95_ms: 61.2,
            p99_ms: 79.0,
            errors_per_s: 2.0,
            total_requests: 9_812,
            total_failures: 12,
            error_rate: 12.0 / 9812.0,
            endpoints: vec![LiveEndpoint {
                name: "list workflows".into(),
                method: "GET".into(),
                requests: 9_812,
                failures: 12,
                rps: 817.7,
                p50_ms: 23.1,
                p95_ms: 61.2,
                p99_ms: 79.0,
                ..LiveEndpoint::default()
            }],
            workers: vec![LiveWorker {
                id: "w1".into(),
                state: "running".into(),
                users: 98,
                cpu_percent: 42.4,
                lost: false,
            }],
            ..LiveView::default()
        }
    }

    #[test]
    fn a_frame_shows_progress_numbers_endpoints_and_workers() {
        let f = render(&view(), 120);
        assert!(f.contains("scenario sustained  running"), "{f}");
        assert!(f.contains("12s / 30s   40%"), "{f}");
        assert!(f.contains("users 98 / 100 planned"), "{f}");
        assert!(f.contains("rps 812.0"), "{f}");
        assert!(f.contains("errors 12 (0.12%, 2.0/s)"), "{f}");
        assert!(
            f.contains("p50 23.10 ms   p95 61.20 ms   p99 79.00 ms"),
            "{f}"
        );
        let row = f
            .lines()
            .find(|l| l.starts_with("list workflows"))
            .unwrap_or_else(|| panic!("no endpoint row in\n{f}"));
        for cell in ["GET", "9812", "12", "817.7", "23.10", "61.20", "79.00"] {
            assert!(row.contains(cell), "{cell} missing from {row}");
        }
        let w = f
            .lines()
            .find(|l| l.starts_with("w1 "))
            .expect("worker row");
        assert!(
            w.contains("running") && w.contains("98") && w.contains("42%"),
            "{w}"
        );
        assert!(!f.ends_with('\n'));
    }

    #[test]
    fn every_line_fits_the_terminal() {
        let mut v = view();
        v.scenario = "s".repeat(500);
        v.endpoints[0].name = format!("\x1b[2J{}", "e".repeat(300));
        for width in [20, 40, 80] {
            let f = render(&v, width);
            for l in f.lines() {
                assert!(l.chars().count() <= width, "{width}: {l}");
                assert!(!l.contains('\x1b'), "{l}");
            }
        }
    }

    #[test]
    fn long_tables_are_summed_up() {
        let mut v = view();
        v.endpoints = (0..20)
            .map(|i| LiveEndpoint {
                name: format!("e{i}"),
                requests: 10,
                failures: 1,
                ..LiveEndpoint::default()
            })
            .collect();
        v.workers = (0..30)
            .map(|i| LiveWorker {
                id: format!("w{i}"),
                state: if i % 3 == 0 { "lost" } else { "running" }.into(),
                ..LiveWorker::default()
            })
            .collect();
        let f = render(&v, 120);
        assert!(
            f.contains("… and 8 more endpoint(s): 80 requests, 8 failures"),
            "{f}"
        );
        assert!(f.contains("… and 22 more: 7 lost 15 running"), "{f}");
        assert_eq!(f.lines().count(), 5 + 1 + 12 + 1 + 1 + 1 + 8 + 1);
    }
}
