//! The live view: in a terminal it is redrawn in place (read back from a real tmux pane); without one, the plain line every second stays.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use squall_tests::{CountingTarget, TestRun, bin, wait_until};

const SCENARIO: &str = r#"
scenarios:
  watched: { users: 4, spawn_rate: 100, duration: 4s }
user_classes:
  u:
    wait: { constant: 10ms }
    tasks:
      - { name: fast path, weight: 3, get: /ok }
      - { name: jittery path, get: /jitter }
"#;

/// A tmux server of this test's own (its socket in the run's temp dir), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// Runs `command` in a detached 120×50 pane that stays after the command exits.
    fn start(dir: &Path, command: &str) -> Tmux {
        let socket = dir.join("tmux.sock");
        let conf = dir.join("tmux.conf");
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g history-limit 5000\n",
        )
        .expect("tmux.conf");
        let t = Tmux { socket };
        let ok = t
            .cmd()
            .arg("-f")
            .arg(&conf)
            .args([
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "50",
                "-s",
                "live",
                command,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session failed");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// The pane's whole history and screen as a person would read it, escapes rendered.
    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-S", "-", "-E", "-", "-t", "live"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Single-quoted for `sh`.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_terminal_the_view_is_redrawn_in_place() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let code_file = run.path("exit-code");
    let coordinator = [
        bin("coordinator").to_str().expect("utf8").to_owned(),
        "-f".into(),
        run.file.to_str().expect("utf8").to_owned(),
        "--host".into(),
        target.url(),
        "--out".into(),
        run.out.to_str().expect("utf8").to_owned(),
        "--local-workers".into(),
        "1".into(),
    ]
    .iter()
    .map(|a| quoted(a))
    .collect::<Vec<_>>()
    .join(" ");
    let script = format!(
        "{coordinator}; echo $? > {code}",
        code = quoted(code_file.to_str().expect("utf8")),
    );
    let tmux = Tmux::start(run.dir(), &format!("sh -c {}", quoted(&script)));
    // While it runs, the view shows the run going on.
    let mut during = String::new();
    let seen = wait_until(Duration::from_secs(30), || {
        during = tmux.screen();
        during.contains("scenario watched  running") && during.contains("fast path ")
    })
    .await;
    assert!(seen, "no running view in the pane:\n{during}");
    let finished = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&code_file).is_ok_and(|c| c.ends_with('\n'))
    })
    .await;
    let screen = tmux.screen();
    assert!(
        finished,
        "the run did not finish in 60 s; the pane:\n{screen}"
    );
    let code = std::fs::read_to_string(&code_file).expect("exit code");
    assert_eq!(code.trim(), "0", "{screen}");
    let report = run.report();

    // What the person at the terminal sees in the end: one frame (the earlier
    // ones, like the one above, were overwritten in place) with the final
    // numbers, then the summary.
    assert_eq!(
        screen.matches("squall  run ").count(),
        1,
        "the view was not redrawn in place:\n{screen}"
    );
    assert!(
        !screen.contains("s/4s] users"),
        "plain progress lines in a terminal:\n{screen}"
    );
    let frame_start = screen.find("squall  run ").expect("the view");
    let frame = &screen[frame_start..];
    assert!(frame.contains("scenario watched  done"), "{frame}");
    assert!(frame.contains("4s / 4s  100%"), "{frame}");
    assert!(
        frame.contains("users 4 / 4 planned"),
        "users planned and actual:\n{frame}"
    );
    assert!(frame.contains("latency  p50 "), "{frame}");
    let header = frame
        .lines()
        .find(|l| l.starts_with("endpoint "))
        .unwrap_or_else(|| panic!("no endpoint table in\n{frame}"));
    for col in [
        "method", "requests", "failures", "rps", "p50 ms", "p95 ms", "p99 ms",
    ] {
        assert!(header.contains(col), "{col} missing from {header}");
    }
    for e in report["endpoints"].as_array().expect("endpoints") {
        let name = e["name"].as_str().expect("name");
        let row = frame
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{frame}"));
        let cells: Vec<&str> = row[name.len()..].split_whitespace().collect();
        // The final frame shows the final numbers: the report's.
        assert_eq!(cells[0], "GET", "{row}");
        assert_eq!(cells[1], e["requests"].to_string(), "{row}");
        assert_eq!(cells[2], e["failures"].to_string(), "{row}");
        let p99: f64 = cells[6].parse().expect("p99");
        let want = e["latency_ms"]["p99"].as_f64().expect("p99");
        assert!((p99 - want).abs() < 0.01, "{row} vs p99 {want}");
    }
    let worker = frame
        .lines()
        .find(|l| l.starts_with("local-1 "))
        .unwrap_or_else(|| panic!("no worker row in\n{frame}"));
    assert!(worker.contains("stopped"), "{worker}");
    assert!(
        frame.contains("Squall run PASSED"),
        "summary after the view:\n{frame}"
    );
    let total = report["totals"]["requests"].as_u64().expect("requests");
    assert!(frame.contains(&format!("requests {total}")), "{frame}");
    assert_eq!(total, target.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_plain_lines_stay() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO).live_view();
    let mut coord = run.local(1, &target.url());
    assert_eq!(
        coord.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        coord.output()
    );
    let err = coord.stderr();
    let plain: Vec<&str> = err.lines().filter(|l| l.contains("s/4s] users")).collect();
    assert!(plain.len() >= 2, "{err}");
    for l in &plain {
        for field in ["rps", "p50", "p95", "p99", "requests", "errors"] {
            assert!(l.contains(field), "{field} missing from {l}");
        }
    }
    assert!(
        !err.contains("squall  run "),
        "the terminal view without a terminal:\n{err}"
    );
    assert!(
        !err.contains("\x1b[2K"),
        "cursor control without a terminal:\n{err}"
    );
}
