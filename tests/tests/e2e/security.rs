//! Securing the worker link: TLS and mTLS with a CA made in the test, refusals with clear messages, and no exposed listener without authentication.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::ExtendedKeyUsagePurpose;
use squall_tests::{CountingTarget, Proc, ReservedPort, TestRun, leaf, new_ca, worker, write_file};

const SCENARIO: &str = "scenarios:\n  s: { users: 2, spawn_rate: 20, duration: 2s }\nuser_classes:\n  u: { wait: { constant: 10ms }, tasks: [ { get: /ok } ] }\n";

/// PEM files of a small PKI written to a temp dir: a server CA and a server
/// certificate for 127.0.0.1/localhost, a client CA and a worker certificate,
/// and an unrelated CA with a worker certificate it signed.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let (ca, ca_issuer) = new_ca("squall test server CA");
    let (server_cert, server_key) = leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca_issuer,
    );
    let (client_ca, client_issuer) = new_ca("squall test worker CA");
    let (client_cert, client_key) = leaf(
        &["worker-1"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &client_issuer,
    );
    let (other_ca, other_issuer) = new_ca("someone else's CA");
    let (rogue_cert, rogue_key) = leaf(
        &["rogue"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &other_issuer,
    );
    Pki {
        ca: write_file(dir, "ca.pem", &ca),
        server_cert: write_file(dir, "server.pem", &server_cert),
        server_key: write_file(dir, "server.key", &server_key),
        client_ca: write_file(dir, "client-ca.pem", &client_ca),
        client_cert: write_file(dir, "client.pem", &client_cert),
        client_key: write_file(dir, "client.key", &client_key),
        other_ca: write_file(dir, "other-ca.pem", &other_ca),
        rogue_cert: write_file(dir, "rogue.pem", &rogue_cert),
        rogue_key: write_file(dir, "rogue.key", &rogue_key),
    }
}

impl Pki {
    /// The coordinator's flags for serving TLS with the server certificate,
    /// and for requiring worker certificates from the client CA when `mutual`.
    fn server_flags(&self, mutual: bool) -> Vec<&str> {
        let mut flags = vec![
            "--tls-cert",
            s(&self.server_cert),
            "--tls-key",
            s(&self.server_key),
        ];
        if mutual {
            flags.extend(["--tls-client-ca", s(&self.client_ca)]);
        }
        flags
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts the run's coordinator waiting `wait` for one remote worker, with
/// `extra` flags, without waiting for it to listen.
fn start_for_one(run: &TestRun, target: &CountingTarget, wait: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--wait-timeout", wait];
    args.extend_from_slice(extra);
    run.start_coordinator(1, &target.url(), &args)
}

/// The run's coordinator waiting `wait` for one remote worker, with `extra`
/// flags, once it listens.
async fn coordinator_for_one(
    run: &TestRun,
    target: &CountingTarget,
    wait: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["--wait-timeout", wait];
    args.extend_from_slice(extra);
    run.coordinator(1, &target.url(), &args).await
}

/// Runs a complete one-worker run and checks that every request reached the
/// report and that the worker says how it attached (`over TLS`, `over mTLS`).
async fn run_and_count(
    mut coord: Proc,
    mut w: Proc,
    target: &CountingTarget,
    run: &TestRun,
    attached: &str,
) {
    let code = coord.exit_code(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{}\n{}", coord.output(), w.output());
    let report = run.report();
    let requests = report["totals"]["requests"].as_u64().unwrap_or(0);
    assert!(requests > 10, "too little traffic: {requests}");
    assert_eq!(requests, target.total(), "{}", coord.output());
    assert!(w.is_running(), "the worker stays attached for the next run");
    assert!(w.stderr().contains(attached), "{}", w.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_run_counts_every_request() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let pki = pki(run.dir());
    let coord = coordinator_for_one(&run, &target, "30s", &pki.server_flags(false)).await;
    // host:port plus --tls-ca means TLS.
    let w = worker(
        &[
            "--master",
            &run.master(),
            "--tls-ca",
            s(&pki.ca),
            "--threads",
            "1",
        ],
        run.dir(),
    );
    run_and_count(coord, w, &target, &run, "over TLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_run_succeeds_and_counts_as_authentication() {
    let target = CountingTarget::start().await;
    // A wildcard bind without a token is allowed: client certificates authenticate workers.
    let run = TestRun::new(SCENARIO).bind("0.0.0.0:0");
    let pki = pki(run.dir());
    let coord = coordinator_for_one(&run, &target, "30s", &pki.server_flags(true)).await;
    // https:// with a DNS name the certificate lists.
    let master = format!("https://localhost:{}", run.port());
    let w = worker(
        &[
            "--master",
            &master,
            "--tls-ca",
            s(&pki.ca),
            "--tls-cert",
            s(&pki.client_cert),
            "--tls-key",
            s(&pki.client_key),
            "--threads",
            "1",
        ],
        run.dir(),
    );
    run_and_count(coord, w, &target, &run, "over mTLS").await;
}

/// Starts a TLS coordinator (mTLS with `mutual`) and a worker with `worker_tls`
/// flags; the worker must exit 2 with `worker_says`, the coordinator must log
/// `coordinator_says` and time out, and the target must see nothing.
async fn refused(mutual: bool, worker_tls: &[&str], worker_says: &[&str], coordinator_says: &str) {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let pki = pki(run.dir());
    let mut coord = coordinator_for_one(&run, &target, "6s", &pki.server_flags(mutual)).await;
    let files = |flag: &str| match flag {
        "ca" => s(&pki.ca).to_owned(),
        "other-ca" => s(&pki.other_ca).to_owned(),
        "client-cert" => s(&pki.client_cert).to_owned(),
        "client-key" => s(&pki.client_key).to_owned(),
        "rogue-cert" => s(&pki.rogue_cert).to_owned(),
        "rogue-key" => s(&pki.rogue_key).to_owned(),
        other => other.to_owned(),
    };
    let mut args = vec!["--master".to_owned(), run.master()];
    args.extend(worker_tls.iter().map(|a| files(a)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut w = worker(&args, run.dir());

    let wcode = w.exit_code(Duration::from_secs(30)).await;
    assert_eq!(
        wcode,
        2,
        "a TLS mismatch is a configuration error\n{}",
        w.output()
    );
    let werr = w.stderr();
    assert!(werr.contains("TLS handshake"), "{}", w.output());
    for needle in worker_says {
        assert!(werr.contains(needle), "expected `{needle}`\n{}", w.output());
    }
    let ccode = coord.exit_code(Duration::from_secs(30)).await;
    assert_eq!(ccode, 3, "{}", coord.output());
    let cerr = coord.stderr();
    assert!(
        cerr.contains("TLS handshake failed") && cerr.contains(coordinator_says),
        "expected `{coordinator_says}`\n{}",
        coord.output()
    );
    assert_eq!(target.total(), 0, "no request may reach the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_with_the_wrong_ca_is_refused() {
    refused(
        false,
        &["--tls-ca", "other-ca"],
        &["not signed by the CA in --tls-ca", "other-ca.pem"],
        "does not trust this coordinator's certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_without_a_client_certificate_is_refused_under_mtls() {
    refused(
        true,
        &["--tls-ca", "ca"],
        &["requires a client certificate", "--tls-cert"],
        "every worker needs --tls-cert",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_with_a_certificate_from_another_ca_is_refused_under_mtls() {
    refused(
        true,
        &[
            "--tls-ca",
            "ca",
            "--tls-cert",
            "rogue-cert",
            "--tls-key",
            "rogue-key",
        ],
        &["rejected this worker's certificate", "--tls-client-ca"],
        "not signed by --tls-client-ca",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_bind_needs_a_token() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO).bind("0.0.0.0:0");

    // Refused up front, before listening.
    let mut c = start_for_one(&run, &target, "1s", &[]);
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{}", c.output());
    let err = c.stderr();
    for needle in ["--token", "SQUALL_TOKEN", "--insecure-no-auth", "0.0.0.0"] {
        assert!(err.contains(needle), "expected `{needle}`\n{}", c.output());
    }
    assert!(!err.contains("waiting for workers"), "{}", c.output());

    // Explicitly opted out: it listens (and times out waiting, exit 3), with a warning.
    let mut c = start_for_one(&run, &target, "1s", &["--insecure-no-auth"]);
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 3, "{}", c.output());
    assert!(c.stderr().contains("waiting for workers"), "{}", c.output());
    assert!(
        c.stderr().contains("without authentication"),
        "{}",
        c.output()
    );

    // With a token it listens too.
    let mut c = start_for_one(&run, &target, "1s", &["--token", "s3cret"]);
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 3, "{}", c.output());
    assert!(c.stderr().contains("waiting for workers"), "{}", c.output());
    assert_eq!(target.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_refused_with_their_path() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let pki = pki(run.dir());
    // The workers below are refused before they dial; should one dial, nobody answers.
    let port = ReservedPort::loopback();
    let bind = port.addr();
    let missing = run.path("missing.pem");
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--tls-cert", s(&missing), "--tls-key", s(&pki.server_key)],
            &["missing.pem", "cannot read"],
        ),
        (
            &[
                "--tls-cert",
                s(&pki.server_key),
                "--tls-key",
                s(&pki.server_key),
            ],
            &["server.key", "no certificate"],
        ),
        (
            &[
                "--tls-cert",
                s(&pki.server_cert),
                "--tls-key",
                s(&pki.client_key),
            ],
            &["client.key", "server.pem"],
        ),
    ];
    for (flags, needles) in cases {
        let mut c = start_for_one(&run, &target, "1s", flags);
        let code = c.exit_code(Duration::from_secs(30)).await;
        assert_eq!(code, 2, "{}", c.output());
        for needle in needles {
            assert!(
                c.stderr().contains(needle),
                "expected `{needle}`\n{}",
                c.output()
            );
        }
        assert!(
            !c.stderr().contains("waiting for workers"),
            "{}",
            c.output()
        );
    }

    let mut w = worker(&["--master", &bind, "--tls-ca", s(&missing)], run.dir());
    assert_eq!(
        w.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        w.output()
    );
    assert!(w.stderr().contains("missing.pem"), "{}", w.output());
    let mut w = worker(
        &[
            "--master",
            &bind,
            "--tls-ca",
            s(&pki.ca),
            "--tls-cert",
            s(&pki.client_cert),
            "--tls-key",
            s(&pki.server_key),
        ],
        run.dir(),
    );
    assert_eq!(
        w.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        w.output()
    );
    assert!(w.stderr().contains("server.key"), "{}", w.output());
    // A plaintext URL contradicting --tls-ca is refused rather than silently downgraded.
    let plain = format!("http://{bind}");
    let mut w = worker(&["--master", &plain, "--tls-ca", s(&pki.ca)], run.dir());
    assert_eq!(
        w.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        w.output()
    );
    assert!(w.stderr().contains("https://"), "{}", w.output());

    // TLS is for remote workers; with in-process workers it is refused clearly.
    let url = target.url();
    let mut args = vec!["--host", url.as_str()];
    args.extend(pki.server_flags(false));
    let mut c = run.command(&args);
    assert_eq!(
        c.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        c.output()
    );
    assert!(c.stderr().contains("--workers N"), "{}", c.output());
    assert_eq!(target.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_verifying_another_name_is_refused() {
    refused(
        false,
        &["--tls-ca", "ca", "--tls-domain", "coordinator.example"],
        &["does not name the host", "--tls-domain"],
        "does not trust this coordinator's certificate",
    )
    .await;
}
