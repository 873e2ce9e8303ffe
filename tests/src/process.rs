//! Starting the real `coordinator` and `worker` binaries with captured output.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::wait::wait_until;

/// The path of a workspace binary built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with the same profile, e.g. `cargo build --profile ci --bins`",
        path.display()
    );
    path
}

/// A child process whose stdout and stderr go to files in a temp dir.
pub struct Proc {
    pub child: Child,
    pub name: String,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        let tag = format!("{name}-{}", std::process::id());
        let out = dir.join(format!("{tag}-{}.out", rand_suffix()));
        let err = dir.join(format!("{tag}-{}.err", rand_suffix()));
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc {
            child,
            name: name.to_owned(),
            out,
            err,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for exit, killing the process and failing the test past `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{} did not exit within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
        }
    }

    /// The exit code, or panics with the output when killed by a signal.
    pub async fn exit_code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait(timeout).await;
        status.code().unwrap_or_else(|| {
            panic!(
                "{} died by a signal\n--- stderr\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// The word the process printed on stderr right after `prefix`, such as the
    /// address a listener got for port 0, once its line is complete. Fails the
    /// test with the output if the process exits first or `timeout` passes.
    pub async fn announced(&mut self, prefix: &str, timeout: Duration) -> String {
        let mut word = None;
        let mut exited = false;
        wait_until(timeout, || {
            // Exit first, then read: whatever it printed before exiting is seen.
            exited = !self.is_running();
            word = self.stderr().split_once(prefix).and_then(|(_, rest)| {
                let (line, _) = rest.split_once('\n')?;
                line.split_whitespace().next().map(str::to_owned)
            });
            word.is_some() || exited
        })
        .await;
        word.unwrap_or_else(|| {
            panic!(
                "{} {} without printing `{prefix}`\n{}",
                self.name,
                if exited {
                    "exited".to_owned()
                } else {
                    format!("ran {timeout:?}")
                },
                self.output()
            )
        })
    }

    /// CPU time (user + system) the process has used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.id().expect("the process is running");
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
        // The command name may hold spaces: fields are counted after its closing parenthesis.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = fields[11..13]
            .iter()
            .map(|f| f.parse::<u64>().expect("utime/stime are numbers"))
            .sum();
        // USER_HZ is 100 on every Linux platform the tests run on.
        Duration::from_millis(ticks * 10)
    }

    /// Sends `signal` (a `kill` name such as `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} has already exited", self.name))
            .to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{signal} {pid} failed");
    }

    /// How many lines of stderr contain `needle`.
    pub fn stderr_lines(&self, needle: &str) -> usize {
        self.stderr().lines().filter(|l| l.contains(needle)).count()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process said, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

pub fn coordinator(args: &[&str], dir: &Path) -> Proc {
    Proc::spawn("coordinator", &bin("coordinator"), args, dir)
}

/// The coordinator unable to write any file beyond `kib` KiB (`ulimit -f`,
/// with SIGXFSZ ignored so a write fails with EFBIG as on a full disk). Its
/// stdout and stderr, together, go through a pipe to the stdout file, which
/// the limit does not cover; the exit code is the coordinator's.
pub fn coordinator_with_file_size_limit(args: &[&str], dir: &Path, kib: u64) -> Proc {
    let program = bin("coordinator");
    let script =
        r#"set -o pipefail; lim=$1; shift; (trap "" XFSZ; ulimit -f "$lim"; exec "$@") 2>&1 | cat"#;
    let kib = kib.to_string();
    let mut all = vec!["-c", script, "squall-file-size-limit", &kib];
    all.push(program.to_str().expect("utf8 path"));
    all.extend_from_slice(args);
    Proc::spawn("coordinator", Path::new("/bin/bash"), &all, dir)
}

pub fn worker(args: &[&str], dir: &Path) -> Proc {
    Proc::spawn("worker", &bin("worker"), args, dir)
}
