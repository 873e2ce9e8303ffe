//! One cross-process run's fixtures: a scenario file, a report directory and the coordinator and workers that use them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::netns::{NetHost, spawn_in};
use crate::process::{Proc, bin, coordinator, coordinator_with_file_size_limit, worker};

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// How long a coordinator may take to say where it listens: generous, as the
/// machine running the tests may be busy.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// A scenario written to a temp dir, a report dir beside it, and where the
/// coordinator listens (port 0 unless a test needs to know it in advance).
pub struct TestRun {
    dir: tempfile::TempDir,
    pub file: PathBuf,
    /// The report dir; a test running several coordinators may point it elsewhere between them.
    pub out: PathBuf,
    bind: String,
    token: Option<String>,
    /// The coordinator's open-file limit (`prlimit --nofile`), when a test sets one.
    fd_limit: Option<u32>,
    /// Whether the coordinator prints its live line (all runs are headless otherwise).
    live: bool,
    /// The network namespace the coordinator and [`TestRun::worker`]s run in, when not this one.
    netns: Option<String>,
    /// The coordinator's `RUST_LOG`, when not `info`.
    log: Option<String>,
    /// The address the last coordinator started with [`TestRun::coordinator`] printed.
    listening: Mutex<Option<String>>,
}

impl TestRun {
    pub fn new(yaml: &str) -> TestRun {
        TestRun::named("plan.yaml", yaml)
    }

    /// A run whose scenario file is called `name`, for tests that look for it in messages.
    pub fn named(name: &str, yaml: &str) -> TestRun {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write_file(dir.path(), name, yaml);
        let out = dir.path().join("out");
        TestRun {
            dir,
            file,
            out,
            bind: "127.0.0.1:0".to_owned(),
            token: None,
            fd_limit: None,
            live: false,
            netns: None,
            log: None,
            listening: Mutex::new(None),
        }
    }

    /// Has the coordinator listen on `addr` (`IP:0` for any port on that address).
    pub fn bind(mut self, addr: &str) -> TestRun {
        addr.clone_into(&mut self.bind);
        self
    }

    /// Gives the coordinator and every worker of this run `--token token`.
    pub fn token(mut self, token: &str) -> TestRun {
        self.token = Some(token.to_owned());
        self
    }

    /// Starts the coordinator with at most `n` open files (soft and hard limit).
    pub fn fd_limit(mut self, n: u32) -> TestRun {
        self.fd_limit = Some(n);
        self
    }

    /// Runs the coordinator and the workers of [`TestRun::worker`] in network namespace `ns`.
    pub fn in_namespace(mut self, ns: &str) -> TestRun {
        self.netns = Some(ns.to_owned());
        self
    }

    /// Runs the coordinator with `RUST_LOG=filter` (its stderr then holds
    /// what the filter lets through).
    pub fn log(mut self, filter: &str) -> TestRun {
        self.log = Some(filter.to_owned());
        self
    }

    /// Has the coordinator print its live line every second (no `--headless`).
    pub fn live_view(mut self) -> TestRun {
        self.live = true;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the run's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The coordinator on this run's scenario file with `args`, for tests that
    /// check how a command line is read; the others use the methods below.
    pub fn command(&self, args: &[&str]) -> Proc {
        let mut all = vec!["-f", utf8(&self.file)];
        all.extend_from_slice(args);
        if let Some(filter) = &self.log {
            assert!(
                self.fd_limit.is_none() && self.netns.is_none(),
                "TestRun::log goes with neither fd_limit nor in_namespace"
            );
            // env sets the variable and then execs the coordinator: same pid.
            return self.coordinator_via("env", &format!("RUST_LOG={filter}"), &all);
        }
        match self.fd_limit {
            None => match &self.netns {
                None => coordinator(&all, self.dir()),
                Some(ns) => spawn_in(ns, "coordinator", &bin("coordinator"), &all, self.dir()),
            },
            // prlimit sets the limits and then execs the coordinator: same pid.
            Some(n) => self.coordinator_via("prlimit", &format!("--nofile={n}:{n}"), &all),
        }
    }

    /// The coordinator started by `program` with `setting` before it: a
    /// wrapper that sets something and then execs it, so the pid is the
    /// coordinator's.
    fn coordinator_via(&self, program: &str, setting: &str, args: &[&str]) -> Proc {
        let coordinator = bin("coordinator");
        let mut wrapped = vec![setting, utf8(&coordinator)];
        wrapped.extend_from_slice(args);
        Proc::spawn("coordinator", Path::new(program), &wrapped, self.dir())
    }

    /// The coordinator, headless, against `host`, reporting to this run's out dir;
    /// with in-process workers unless `extra` says otherwise.
    pub fn headless(&self, host: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["--host", host, "--out", utf8(&self.out)];
        if !self.live {
            args.push("--headless");
        }
        args.extend_from_slice(extra);
        self.command(&args)
    }

    /// The coordinator with `workers` in-process local workers, headless, against `host`.
    pub fn local(&self, workers: usize, host: &str) -> Proc {
        self.headless(host, &["--local-workers", &workers.to_string()])
    }

    /// [`TestRun::local`] run to its end within `deadline`: fails the test
    /// with the coordinator's output unless it exits 0, then reads the report.
    /// Most end-to-end tests begin this way; the process is returned for those
    /// that look at its output afterwards.
    pub async fn local_ok(
        &self,
        workers: usize,
        host: &str,
        deadline: Duration,
    ) -> (Proc, serde_json::Value) {
        let mut c = self.local(workers, host);
        let code = c.exit_code(deadline).await;
        assert_eq!(code, 0, "{}", c.output());
        (c, self.report())
    }

    /// [`TestRun::local`] with no file allowed beyond `kib` KiB, so that
    /// writing the report fails as on a full disk.
    pub fn local_with_file_size_limit(&self, workers: usize, host: &str, kib: u64) -> Proc {
        let count = workers.to_string();
        let args = [
            "-f",
            utf8(&self.file),
            "--host",
            host,
            "--out",
            utf8(&self.out),
            "--headless",
            "--local-workers",
            &count,
        ];
        coordinator_with_file_size_limit(&args, self.dir(), kib)
    }

    /// The coordinator waiting for `workers` remote workers, headless, against
    /// `host`, once it says where it listens: its workers can be started next.
    pub async fn coordinator(&self, workers: usize, host: &str, extra: &[&str]) -> Proc {
        let mut c = self.start_coordinator(workers, host, extra);
        let addr = c
            .announced("coordinator listening on", LISTEN_DEADLINE)
            .await;
        *self.listening.lock().expect("listening address") = Some(addr);
        c
    }

    /// [`TestRun::coordinator`] without waiting for it to listen: for
    /// coordinators that are to refuse their command line, and for those whose
    /// address nobody dials.
    pub fn start_coordinator(&self, workers: usize, host: &str, extra: &[&str]) -> Proc {
        let count = workers.to_string();
        let mut args = vec!["--workers", &count, "--bind", &self.bind];
        if let Some(token) = &self.token {
            args.extend(["--token", token]);
        }
        args.extend_from_slice(extra);
        self.headless(host, &args)
    }

    /// Where workers dial: the address the coordinator printed, or the bind
    /// address when the test fixed its port.
    pub fn master(&self) -> String {
        if let Some(addr) = &*self.listening.lock().expect("listening address") {
            return addr.clone();
        }
        assert!(
            !self.bind.ends_with(":0"),
            "start the coordinator before its workers: it picks its port"
        );
        self.bind.clone()
    }

    /// The coordinator's port.
    pub fn port(&self) -> u16 {
        let master = self.master();
        master
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {master}"))
    }

    /// A worker process named `id` dialling this run's coordinator.
    pub fn worker(&self, id: &str, extra: &[&str]) -> Proc {
        let args = self.worker_args(id, extra);
        let args = args.iter().map(String::as_str).collect::<Vec<_>>();
        match &self.netns {
            None => worker(&args, self.dir()),
            Some(ns) => spawn_in(
                ns,
                &format!("{id}-worker"),
                &bin("worker"),
                &args,
                self.dir(),
            ),
        }
    }

    /// A worker process named `id` on `host`, dialling this run's coordinator.
    pub fn worker_on(&self, host: &NetHost, id: &str, extra: &[&str]) -> Proc {
        let args = self.worker_args(id, extra);
        host.spawn(
            &format!("{id}-worker"),
            &bin("worker"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            self.dir(),
        )
    }

    fn worker_args(&self, id: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["--master".to_owned(), self.master(), "--id".to_owned()];
        args.push(id.to_owned());
        if let Some(token) = &self.token {
            args.extend(["--token".to_owned(), token.clone()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    }

    pub fn report(&self) -> serde_json::Value {
        crate::report::read_report(&self.out)
    }
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}
