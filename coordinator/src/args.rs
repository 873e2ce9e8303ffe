//! The `coordinator` command line (clap derive); every flag also reads a `SQUALL_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Squall coordinator: splits a load test across workers, merges their results, checks thresholds.
#[derive(Debug, Parser)]
#[command(name = "coordinator", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the scenarios in a file.
    List {
        /// Scenario file.
        file: PathBuf,
    },
    /// Check a scenario file (syntax, keys, values) without sending any traffic.
    Validate {
        /// Scenario file.
        file: PathBuf,
    },
    /// Run the built-in demo: the demo target, 2 local workers and the demo scenario.
    Demo(DemoArgs),
    /// Compare two reports (report.json files): prints the comparison; exit 1 on a regression.
    Compare(CompareArgs),
    /// Render a report.json again: report.html, summary.txt, summary.md and timeline.csv.
    Report {
        /// The report.json to render.
        report: PathBuf,
        /// Directory to write the rendered report to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Merge reports of runs of the same scenario into one, exactly from their histograms.
    Merge {
        /// The report.json files to merge (two or more).
        #[arg(num_args = 2.., required = true)]
        reports: Vec<PathBuf>,
        /// Directory to write the merged report to.
        #[arg(long)]
        out: PathBuf,
    },
    /// A long-lived coordinator: workers stay attached between runs, which are started and watched over HTTP (REST API, dashboard, /metrics).
    Serve(ServeArgs),
    /// Serve only the demo target (an HTTP API to aim workers at).
    Target {
        /// Address to listen on.
        #[arg(long, env = "SQUALL_TARGET_BIND", default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
    },
    /// Health check for images without a shell: exit 0 if tcp://HOST:PORT accepts a connection or http://HOST:PORT/PATH answers 2xx (its body is printed).
    Probe {
        /// tcp://HOST:PORT or http://HOST[:PORT][/PATH].
        url: String,
        /// Give up (exit 3) after this long.
        #[arg(long, default_value = "2s")]
        timeout: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Defaults for these flags from a TOML, YAML or JSON file (keys are flag names); the command line and SQUALL_* variables win.
    #[arg(long, env = "SQUALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Scenario file.
    #[arg(
        short = 'f',
        long = "file",
        env = "SQUALL_FILE",
        default_value = "loadtest.yaml"
    )]
    pub file: PathBuf,
    /// Scenario to run when the file holds several.
    #[arg(long, env = "SQUALL_SCENARIO", conflicts_with = "all")]
    pub scenario: Option<String>,
    /// Run every scenario in the file in turn (one report each, plus an index).
    #[arg(long, env = "SQUALL_ALL")]
    pub all: bool,
    /// Wait for this many remote workers (`worker --master HOST:PORT`) before starting.
    #[arg(long, env = "SQUALL_WORKERS", conflicts_with = "local_workers")]
    pub workers: Option<usize>,
    /// Start this many in-process workers (attached over loopback gRPC). Default: 1.
    #[arg(long, env = "SQUALL_LOCAL_WORKERS")]
    pub local_workers: Option<usize>,
    /// gRPC listen address for workers. Default with --workers: 0.0.0.0:5557 when workers authenticate (--token or mTLS), else 127.0.0.1:5557; an ephemeral loopback port for local workers.
    #[arg(long, env = "SQUALL_BIND")]
    pub bind: Option<SocketAddr>,
    /// Target base URL, overriding the file's `host`.
    #[arg(long, env = "SQUALL_HOST")]
    pub host: Option<String>,
    /// Number of users, overriding the scenario.
    #[arg(long, env = "SQUALL_USERS")]
    pub users: Option<u64>,
    /// Users started per second, overriding the scenario.
    #[arg(long, env = "SQUALL_SPAWN_RATE")]
    pub spawn_rate: Option<f64>,
    /// Run duration (e.g. 30s, 5m), overriding the scenario.
    #[arg(long, env = "SQUALL_DURATION")]
    pub duration: Option<String>,
    /// Open-model arrival rate (e.g. 500/s), overriding the scenario.
    #[arg(long, env = "SQUALL_ARRIVAL_RATE")]
    pub arrival_rate: Option<String>,
    /// Report directory.
    #[arg(long, env = "SQUALL_OUT", default_value = "report")]
    pub out: PathBuf,
    /// Extra threshold, e.g. "p99 < 200ms" (repeatable).
    #[arg(long = "threshold", env = "SQUALL_THRESHOLD")]
    pub thresholds: Vec<String>,
    /// Compare the run with a baseline: a report.json path, or NAME for NAME.json in --baselines-dir; exit 1 on a regression.
    #[arg(long, env = "SQUALL_BASELINE", value_name = "NAME|FILE")]
    pub baseline: Option<String>,
    /// Keep this run's report.json as baseline NAME in --baselines-dir (only when the run passed).
    #[arg(long, env = "SQUALL_SAVE_BASELINE", value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Where named baselines are kept.
    #[arg(
        long,
        env = "SQUALL_BASELINES_DIR",
        default_value = ".squall/baselines"
    )]
    pub baselines_dir: PathBuf,
    /// When a change against the baseline is a regression: `10%`, or per metric, e.g. `p95=10%, rps=15%, error_rate=0.5%` (default: latency +20%, req/s -20%, error rate +1 point).
    #[arg(long, env = "SQUALL_REGRESSION", value_name = "RULE")]
    pub regression: Option<String>,
    /// Also write the thresholds and the comparison as JUnit XML to this file.
    #[arg(long, env = "SQUALL_JUNIT", value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Shared secret workers must present; required when --bind is not a loopback address.
    #[arg(long, env = "SQUALL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Accept any worker on a non-loopback --bind without a token or client certificates (trusted networks only).
    #[arg(long, env = "SQUALL_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve the worker link over TLS with this certificate chain (PEM); needs --tls-key. Workers then dial with --tls-ca.
    #[arg(
        long,
        env = "SQUALL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SQUALL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: only workers presenting a certificate signed by this CA (PEM) may connect; needs --tls-cert.
    #[arg(
        long,
        env = "SQUALL_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Keep each worker's share fixed when workers are lost or join mid-run.
    #[arg(long, env = "SQUALL_NO_REBALANCE")]
    pub no_rebalance: bool,
    /// No live progress lines; only the start, warnings and the final summary.
    #[arg(long, env = "SQUALL_HEADLESS")]
    pub headless: bool,
    /// How long to wait for --workers N to attach before giving up (exit 3).
    #[arg(long, env = "SQUALL_WAIT_TIMEOUT", default_value = "60s")]
    pub wait_timeout: String,
    /// Engine threads per local worker. Default: cores / local workers.
    #[arg(long, env = "SQUALL_THREADS")]
    pub threads: Option<usize>,
    /// Run the local workers' engine threads under SCHED_FIFO at this priority (1-99); needs root or CAP_SYS_NICE. Remote workers take the worker's own --realtime-priority.
    #[arg(long, env = "SQUALL_REALTIME_PRIORITY", value_name = "1-99")]
    pub realtime_priority: Option<u8>,
    /// Serve Prometheus /metrics (OpenMetrics) on this address while the run goes on; a non-loopback address needs --token (sent as a bearer token).
    #[arg(long, env = "SQUALL_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// gRPC listen address for workers.
    #[arg(long, env = "SQUALL_BIND", default_value = "127.0.0.1:5557")]
    pub bind: SocketAddr,
    /// HTTP listen address for the REST API, the dashboard and /metrics.
    #[arg(long, env = "SQUALL_HTTP", default_value = "127.0.0.1:8089")]
    pub http: SocketAddr,
    /// Shared secret: workers present it, and HTTP clients send it as `Authorization: Bearer T`. Required when --bind or --http is not a loopback address.
    #[arg(long, env = "SQUALL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where runs and baselines are kept (listed again after a restart).
    #[arg(long, env = "SQUALL_DATA", default_value = ".squall/serve")]
    pub data: PathBuf,
    /// A scenario file whose scenarios can be started by name.
    #[arg(short = 'f', long = "file", env = "SQUALL_FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The new run's report.json.
    pub new: PathBuf,
    /// The baseline: a report.json path, or NAME for NAME.json in --baselines-dir.
    #[arg(value_name = "BASE")]
    pub base: String,
    /// Also write the new report with the comparison (report.json, summary.txt, summary.md, report.html, timeline.csv) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// When a change is a regression (as for a run's --regression).
    #[arg(long, value_name = "RULE")]
    pub regression: Option<String>,
    /// Where named baselines are kept.
    #[arg(long, default_value = ".squall/baselines")]
    pub baselines_dir: PathBuf,
    /// Also write the comparison as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of users.
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Users started per second.
    #[arg(long, default_value_t = 20.0)]
    pub spawn_rate: f64,
    /// Run duration.
    #[arg(long, default_value = "20s")]
    pub duration: String,
    /// In-process workers.
    #[arg(long, default_value_t = 2)]
    pub local_workers: usize,
    /// Report directory.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// No live progress lines.
    #[arg(long)]
    pub headless: bool,
    /// Address for the demo target (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub target_bind: SocketAddr,
}
