//! Docker for the deployment tests: the engine check, the image built once per test run, and compose projects that are always taken down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::bin;
use crate::wait::wait_until;

/// The tag the tests build and run; left in place after the run (shared).
pub const TEST_IMAGE: &str = "squall:e2e";

/// The repository root (compose files, scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Checks that a Docker engine answers: without one the test fails (the
/// machines this suite runs on have one), so a missing engine never passes.
pub fn require_docker(test: &str) -> bool {
    static ENGINE: OnceLock<Result<(), String>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        let out = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .map_err(|e| format!("docker is not installed: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "no Docker engine answers: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    match engine {
        Ok(()) => true,
        Err(why) => panic!("{test}: {why} (these tests need a Docker engine)"),
    }
}

/// Runs a command to completion and returns its output, failing the test if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Like [`run`], failing the test unless the command succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds [`TEST_IMAGE`] from the binaries of this test's own profile with
/// `docker/build-image.sh --bin-dir`, so no test compiles anything. Tests
/// run as separate processes (nextest), so `flock` serialises the builds;
/// after the first, Docker's build cache makes the others take about a second.
pub fn build_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin_dir = bin("coordinator")
            .parent()
            .expect("binary dir")
            .to_path_buf();
        bin("worker");
        let lock = std::env::temp_dir().join("squall-e2e-image.lock");
        let started = Instant::now();
        run_ok(
            Command::new("flock")
                .arg(&lock)
                .arg(repo_root().join("docker/build-image.sh"))
                .arg("--bin-dir")
                .arg(&bin_dir)
                .args(["--tag", TEST_IMAGE]),
        );
        eprintln!(
            "image {TEST_IMAGE} built in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
    TEST_IMAGE
}

/// One docker-compose project with a unique name; `down -v` in Drop, so its
/// containers, networks and volumes go even when the test fails.
pub struct Compose {
    pub name: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Compose {
    /// A project over `files` (relative to the repository root; the first
    /// one's directory is the project directory) named `squall-<prefix>-<random>`.
    pub fn new(prefix: &str, files: &[&str], env: &[(&str, String)]) -> Compose {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("squall-{prefix}-{}-{nanos:x}", std::process::id()).to_lowercase();
        Compose {
            name,
            files: files.iter().map(|f| repo_root().join(f)).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    /// A `docker-compose -p NAME -f FILE...` command with the project's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.args(["--ansi", "never"])
            .arg("-p")
            .arg(&self.name)
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1");
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `docker-compose ARGS`, failing the test unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.command().args(args))
    }

    /// The ids of the service's containers (running or not), in creation order.
    pub fn containers(&self, service: &str) -> Vec<String> {
        self.ok(&["ps", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The one container of `service`.
    pub fn container(&self, service: &str) -> String {
        let ids = self.containers(service);
        assert_eq!(ids.len(), 1, "one {service} container expected: {ids:?}");
        ids[0].clone()
    }

    /// Every service's log, for failure messages.
    pub fn logs(&self) -> String {
        let out = run(self.command().args(["logs", "--no-color"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for a container to exit and returns its exit code; fails the
    /// test with every log past `timeout`.
    pub async fn exit_code(&self, id: &str, timeout: Duration) -> i64 {
        let mut code = None;
        let exited = wait_until(timeout, || {
            let state = run_ok(Command::new("docker").args([
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                id,
            ]));
            let mut parts = state.split_whitespace();
            if parts.next() == Some("exited") {
                code = parts.next().and_then(|c| c.parse().ok());
            }
            code.is_some()
        })
        .await;
        assert!(
            exited,
            "container {id} still running after {timeout:?}\n{}",
            self.logs()
        );
        code.unwrap_or(-1)
    }

    /// What is left of the project: containers, networks and volumes carrying its label.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut left = Vec::new();
        for kind in [
            &["ps", "-a", "-q", "--filter"][..],
            &["network", "ls", "-q", "--filter"],
            &["volume", "ls", "-q", "--filter"],
        ] {
            let out = run_ok(Command::new("docker").args(kind).arg(&label));
            left.extend(out.lines().map(|l| format!("{} {l}", kind[0])));
        }
        left
    }

    /// `down -v`: stops and removes everything the project made.
    pub fn down(&self) {
        let out = run(self
            .command()
            .args(["down", "-v", "--remove-orphans", "-t", "5"]));
        if !out.status.success() {
            eprintln!(
                "docker-compose -p {} down -v failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.down();
    }
}

/// `docker exec ID ARGS...`: stdout when it succeeds, else the error.
pub fn exec(id: &str, args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("docker").arg("exec").arg(id).args(args));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker exec {id} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
