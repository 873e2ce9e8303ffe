//! The `worker` command line (clap; every flag also from a `SQUALL_*` variable) and its conversion into a validated `AgentConfig`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::engine::Realtime;
use crate::error::WorkerError;
use crate::link::AgentConfig;

/// A Squall worker: dials the coordinator, waits for runs, drives HTTP load.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
pub struct Args {
    /// Defaults for these flags from a TOML, YAML or JSON file (keys are flag names); the command line and SQUALL_* variables win.
    #[arg(long, env = "SQUALL_CONFIG")]
    config: Option<PathBuf>,
    /// Coordinator address, host:port (workers dial out, so they work behind NAT); https://host:port or --tls-ca dials over TLS.
    #[arg(long, env = "SQUALL_MASTER", default_value = "127.0.0.1:5557")]
    master: String,
    /// Shared secret; must match the coordinator's --token.
    #[arg(long, env = "SQUALL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Worker id shown in reports (default: hostname-pid).
    #[arg(long, env = "SQUALL_WORKER_ID")]
    id: Option<String>,
    /// Engine threads (default: one per core).
    #[arg(long, env = "SQUALL_THREADS")]
    threads: Option<usize>,
    /// Give up (exit 3) after this long without reaching a coordinator, e.g. 30s (default: retry forever).
    #[arg(long, env = "SQUALL_GIVE_UP_AFTER", value_parser = parse_duration)]
    give_up_after: Option<Duration>,
    /// CA certificate (PEM) that signed the coordinator's --tls-cert; turns TLS on.
    #[arg(long, env = "SQUALL_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a coordinator that requires mTLS (--tls-client-ca); needs --tls-key.
    #[arg(
        long,
        env = "SQUALL_TLS_CERT",
        value_name = "FILE",
        requires_all = ["tls_key", "tls_ca"]
    )]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SQUALL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Name to verify in the coordinator's certificate, when it differs from the --master host.
    #[arg(
        long,
        env = "SQUALL_TLS_DOMAIN",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    tls_domain: Option<String>,
    /// Run the engine threads under SCHED_FIFO at this priority (1-99), so that nothing else on their cores delays the open model's arrivals; needs root or CAP_SYS_NICE (docs/deploy.md).
    #[arg(long, env = "SQUALL_REALTIME_PRIORITY", value_name = "1-99")]
    realtime_priority: Option<u8>,
    /// Write every request's latency (endpoint index, µs) to this file, for auditing.
    #[arg(long, env = "SQUALL_SAMPLES_FILE")]
    samples_file: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    squall_common::duration::parse(s).map_err(|e| e.to_string())
}

fn default_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

impl Args {
    /// Checks the flags and reads the TLS files: a worker that could never
    /// connect fails here (exit 2), before it dials.
    pub fn into_config(self) -> Result<AgentConfig, WorkerError> {
        let tls = match &self.tls_ca {
            Some(ca) => {
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                Some(AgentConfig::load_tls(ca, identity, self.tls_domain)?)
            }
            None => None,
        };
        Ok(AgentConfig {
            master: AgentConfig::master_url(&self.master, tls.is_some())?,
            tls,
            token: self.token,
            id: self.id.unwrap_or_else(default_id),
            threads: self
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            labels: Default::default(),
            realtime: self.realtime_priority.map(Realtime::new).transpose()?,
            samples_file: self.samples_file,
            give_up_after: self.give_up_after,
            handle_signals: true,
        })
    }
}
