//! `coordinator serve` as a test fixture: the process, where its workers dial, and a client for its API.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::api_client::ApiClient;
use crate::process::{Proc, coordinator};

/// How long serve may take to say where it listens.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// A running `coordinator serve`.
pub struct Served {
    pub proc: Proc,
    /// Where workers dial.
    pub master: String,
    /// `host:port` of the HTTP API.
    pub http: String,
    /// A client with the token (if any).
    pub api: ApiClient,
}

impl Served {
    /// Starts `coordinator serve` with `--data data`, `--bind bind` (`127.0.0.1:0` for any port),
    /// an ephemeral loopback HTTP port, `extra` flags and the token, once it listens on both.
    pub async fn start(
        dir: &Path,
        data: &Path,
        bind: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> Served {
        let data = data.to_str().expect("utf8 path");
        let mut args = vec![
            "serve",
            "--bind",
            bind,
            "--http",
            "127.0.0.1:0",
            "--data",
            data,
        ];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        args.extend_from_slice(extra);
        let mut proc = coordinator(&args, dir);
        let master = proc
            .announced("coordinator listening on", LISTEN_DEADLINE)
            .await;
        let url = proc
            .announced("dashboard and REST API on", LISTEN_DEADLINE)
            .await;
        let http = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let api = ApiClient::new(&http, token);
        Served {
            proc,
            master,
            http,
            api,
        }
    }

    /// Waits until `n` workers are attached.
    pub async fn wait_for_workers(&self, n: usize) {
        let api = self.api.clone();
        eventually(
            Duration::from_secs(30),
            &format!("{n} workers attached"),
            || {
                let api = api.clone();
                async move {
                    let w = api.get("/api/workers").await.json();
                    (w.as_array().map_or(0, Vec::len) >= n).then_some(())
                }
            },
        )
        .await;
    }

    /// Waits until run `id` is no longer running, and returns its record.
    pub async fn wait_until_finished(&self, id: &str, timeout: Duration) -> serde_json::Value {
        let api = self.api.clone();
        let path = format!("/api/runs/{id}");
        eventually(timeout, &format!("run {id} to finish"), || {
            let api = api.clone();
            let path = path.clone();
            async move {
                let r = api.get(&path).await.json();
                (r["state"] != "running").then_some(r)
            }
        })
        .await
    }
}

/// Polls `check` every 100 ms until it gives a value or `timeout` passes (then the test fails, naming `what`).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of an external tool a test needs (`promtool`, `chromium`); fails
/// the test, saying how to install it, when it is not on the PATH: nothing is
/// skipped silently.
pub fn require_tool(name: &str, package: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs `{name}`, which is not on the PATH: install the Debian package `{package}` (apt-get install -y --no-install-recommends {package}; .ci/run does this)"
            )
        })
}
