//! `https://` targets: certificates checked against the scenario's CA, refused
//! without it (every request a `tls` failure), accepted with `insecure: true`.

use std::sync::Arc;
use std::time::Duration;

use rcgen::ExtendedKeyUsagePurpose;
use squall_tests::{CountingTarget, TestRun, leaf, new_ca};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS front for a plain target, with a certificate for 127.0.0.1 from its
/// own CA: each accepted connection is relayed to the target after the handshake.
struct TlsFront {
    url: String,
    ca_pem: String,
}

async fn tls_front(target: &CountingTarget) -> TlsFront {
    let (ca_pem, issuer) = new_ca("squall test target CA");
    let (cert, key) = leaf(
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    );
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let plain = target.url().trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let plain = plain.clone();
            tokio::spawn(async move {
                // A refused handshake just ends this connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(plain.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    TlsFront {
        url: format!("https://127.0.0.1:{port}"),
        ca_pem,
    }
}

const TASKS: &str = "scenarios:\n  s: { users: 4, spawn_rate: 100, duration: 2s }\nuser_classes:\n  u: { wait: { constant: 10ms }, tasks: [ { get: /ok } ] }\n";

/// Runs the scenario against the front with one local worker; the report.
async fn run(yaml: &str, front: &TlsFront, ca: bool) -> serde_json::Value {
    let run = TestRun::new(yaml);
    if ca {
        squall_tests::write_file(run.dir(), "target-ca.pem", &front.ca_pem);
    }
    run.local_ok(1, &front.url, Duration::from_secs(30)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_verified_with_the_scenario_ca_counts_every_request() {
    let target = CountingTarget::start().await;
    let front = tls_front(&target).await;
    let yaml = format!("tls: {{ ca: target-ca.pem }}\n{TASKS}");
    let report = run(&yaml, &front, true).await;
    assert_all_through(&report, &target);
}

/// Every request succeeded and reached the target through the TLS front.
fn assert_all_through(report: &serde_json::Value, target: &CountingTarget) {
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 50, "too little traffic: {requests}");
    assert_eq!(report["totals"]["failures"].as_u64(), Some(0), "{report}");
    assert_eq!(requests, target.total(), "every request reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_with_an_unknown_ca_fails_every_request_as_tls() {
    let target = CountingTarget::start().await;
    let front = tls_front(&target).await;
    let report = run(TASKS, &front, false).await;
    let totals = &report["totals"];
    let requests = totals["requests"].as_u64().expect("requests");
    assert!(requests > 0, "attempts are counted");
    assert_eq!(totals["failures"].as_u64(), Some(requests), "{report}");
    let endpoint = &report["endpoints"][0];
    assert_eq!(
        endpoint["errors"]["tls"].as_u64(),
        Some(requests),
        "{report}"
    );
    assert_eq!(target.total(), 0, "nothing got past a refused certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_target_with_insecure_accepts_any_certificate() {
    let target = CountingTarget::start().await;
    let front = tls_front(&target).await;
    let yaml = format!("tls: {{ insecure: true }}\n{TASKS}");
    let report = run(&yaml, &front, false).await;
    assert_all_through(&report, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_ca_file_is_refused_before_any_traffic() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(&format!("tls: {{ ca: nowhere.pem }}\n{TASKS}"));
    let mut c = run.local(1, &target.url());
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{}", c.output());
    assert!(c.stderr().contains("tls.ca"), "{}", c.output());
    assert!(c.stderr().contains("nowhere.pem"), "{}", c.output());
    assert_eq!(target.total(), 0);
}
