//! HTTP/2 targets (h2c with prior knowledge, h2 by ALPN over TLS) and
//! `connection: close`, against a hyper server that counts connections,
//! requests by protocol version and the streams open at once on each connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::ExtendedKeyUsagePurpose;
use squall_tests::{TestRun, leaf, new_ca};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the server saw, counted as it happened.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    http2: AtomicU64,
    /// The most requests in progress at once on any one connection.
    max_streams: AtomicU64,
}

/// A counting server for HTTP/1.1 and HTTP/2 (h2c prior knowledge or, with
/// TLS, whatever ALPN settles on); `/slow` answers after 20 ms so that a
/// client's concurrent streams pile up where the server can see them.
struct H2Target {
    url: String,
    ca_pem: String,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for H2Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Target {
    /// `alpn`: None for plain TCP, else the protocols the TLS server accepts.
    async fn start(alpn: Option<&[&[u8]]>) -> H2Target {
        let (ca_pem, issuer) = new_ca("squall h2 test CA");
        let acceptor = alpn.map(|protocols| {
            let (cert, key) = leaf(
                &["127.0.0.1", "localhost"],
                ExtendedKeyUsagePurpose::ServerAuth,
                &issuer,
            );
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
            let mut config =
                ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("protocol versions")
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .expect("server certificate");
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let in_flight = Arc::new(AtomicU64::new(0));
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counts = counts.clone();
                        let in_flight = in_flight.clone();
                        async move {
                            counts.requests.fetch_add(1, Ordering::SeqCst);
                            if req.version() == Version::HTTP_2 {
                                counts.http2.fetch_add(1, Ordering::SeqCst);
                            }
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            counts.max_streams.fetch_max(now, Ordering::SeqCst);
                            if req.uri().path() == "/slow" {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let server = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(a) => {
                            // A refused handshake just ends this connection.
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = server.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
        H2Target {
            url: format!("{scheme}://127.0.0.1:{port}"),
            ca_pem,
            seen,
            task,
        }
    }

    fn get(&self, what: fn(&Seen) -> &AtomicU64) -> u64 {
        what(&self.seen).load(Ordering::SeqCst)
    }
}

/// Runs `yaml` with one local worker against `target` (its CA written
/// beside the scenario as `target-ca.pem`); the report.
async fn run(yaml: &str, target: &H2Target) -> serde_json::Value {
    let run = TestRun::new(yaml);
    squall_tests::write_file(run.dir(), "target-ca.pem", &target.ca_pem);
    run.local_ok(1, &target.url, Duration::from_secs(60))
        .await
        .1
}

/// Every request of the report reached the server, as HTTP/2, and none failed.
fn assert_all_h2(report: &serde_json::Value, target: &H2Target) {
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 50, "too little traffic: {requests}");
    assert_eq!(report["totals"]["failures"].as_u64(), Some(0), "{report}");
    assert_eq!(
        requests,
        target.get(|s| &s.requests),
        "the server's own count"
    );
    assert_eq!(
        requests,
        target.get(|s| &s.http2),
        "every request was HTTP/2"
    );
}

/// Runs `yaml` against a new counting server (`alpn` as for
/// [`H2Target::start`]) and checks that every request reached it as HTTP/2
/// ([`assert_all_h2`]); the server, for what else a test counts.
async fn served_as_h2(alpn: Option<&[&[u8]]>, yaml: &str) -> H2Target {
    let target = H2Target::start(alpn).await;
    let report = run(yaml, &target).await;
    assert_all_h2(&report, &target);
    target
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_multiplexes_users_over_n_connections_of_m_streams() {
    let yaml = "defaults:\n  http2: { connections: 2, max_streams: 3, prior_knowledge: true }\nscenarios:\n  s: { users: 20, spawn_rate: 1000, duration: 2s }\nuser_classes:\n  u: { tasks: [ { get: /slow } ] }\n";
    let target = served_as_h2(None, yaml).await;
    let connections = target.get(|s| &s.connections);
    assert!(
        (1..=2).contains(&connections),
        "{connections} connections for http2.connections 2"
    );
    let streams = target.get(|s| &s.max_streams);
    // 20 users over 2 connections: multiplexed, but never past max_streams.
    assert!(
        (2..=3).contains(&streams),
        "at most {streams} streams at once on one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_keeps_one_connection_and_users_are_dealt_over_them() {
    // Two users, four connections: each user sends on its own, so the
    // other two are never opened (requests dealt in turn opened all four).
    let yaml = "defaults:\n  http2: { connections: 4, max_streams: 10, prior_knowledge: true }\nscenarios:\n  s: { users: 2, spawn_rate: 1000, duration: 2s }\nuser_classes:\n  u: { tasks: [ { get: /slow } ] }\n";
    let target = served_as_h2(None, yaml).await;
    assert_eq!(target.get(|s| &s.connections), 2, "one connection per user");
    // Eight users over four connections: two on each, one request in
    // flight each, so never more than two streams at once on one.
    let yaml = yaml.replace("users: 2,", "users: 8,");
    let target = served_as_h2(None, &yaml).await;
    assert_eq!(target.get(|s| &s.connections), 4);
    assert_eq!(
        target.get(|s| &s.max_streams),
        2,
        "two users on each connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_chosen_by_alpn() {
    let yaml = "tls: { ca: target-ca.pem }\ndefaults:\n  http2: { connections: 1 }\nscenarios:\n  s: { users: 8, spawn_rate: 1000, duration: 2s }\nuser_classes:\n  u: { wait: { constant: 5ms }, tasks: [ { get: /ok }, { post: /ok, json: { a: 1 } } ] }\n";
    let target = served_as_h2(Some(&[b"h2", b"http/1.1"]), yaml).await;
    assert_eq!(
        target.get(|s| &s.connections),
        1,
        "one connection per worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_that_does_not_pick_h2_fails_every_request_as_tls() {
    let target = H2Target::start(Some(&[b"http/1.1"])).await;
    let yaml = "tls: { ca: target-ca.pem }\ndefaults:\n  http2: { connections: 1 }\nscenarios:\n  s: { users: 2, spawn_rate: 1000, duration: 1s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
    let report = run(yaml, &target).await;
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 0, "attempts are counted");
    assert_eq!(
        report["endpoints"][0]["errors"]["tls"].as_u64(),
        Some(requests),
        "{report}"
    );
    assert_eq!(target.get(|s| &s.requests), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_opens_one_connection_per_request() {
    let target = H2Target::start(Some(&[b"http/1.1"])).await;
    let yaml = "tls: { ca: target-ca.pem }\nscenarios:\n  s: { users: 4, spawn_rate: 1000, duration: 2s }\nuser_classes:\n  u:\n    connection: close\n    wait: { constant: 5ms }\n    tasks: [ { get: /ok } ]\n";
    let report = run(yaml, &target).await;
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 50, "too little traffic: {requests}");
    assert_eq!(report["totals"]["failures"].as_u64(), Some(0), "{report}");
    assert_eq!(requests, target.get(|s| &s.requests));
    assert_eq!(
        target.get(|s| &s.connections),
        requests,
        "a TCP connection and TLS handshake per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http2_and_connection_values_exit_2_with_their_location() {
    let target = H2Target::start(None).await;
    let tail = "scenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n";
    let cases = [
        (
            "defaults:\n  http2: { max_streams: 0, prior_knowledge: true }\n",
            "bad.yaml:2:",
            "max_streams",
        ),
        (
            "defaults:\n  http2:\n    connections: 0\n    prior_knowledge: true\n",
            "bad.yaml:3:5",
            "connections",
        ),
        (
            "defaults:\n  http2: { connections: 2 }\n",
            "bad.yaml:2:3",
            "prior_knowledge",
        ),
        (
            "defaults:\n  http2: { prior_knowledge: true, streams: 4 }\n",
            "bad.yaml:2:",
            "unknown field `streams`",
        ),
        (
            "defaults:\n  http2: { prior_knowledge: true }\n  connection: close\n",
            "bad.yaml:3:",
            "connection: close",
        ),
        (
            "defaults:\n  connection: sometimes\n",
            "bad.yaml:2:",
            "close",
        ),
    ];
    for (head, at, what) in cases {
        let run = TestRun::named("bad.yaml", &format!("{head}{tail}"));
        let mut c = run.command(&["--headless", "--host", &target.url]);
        let code = c.exit_code(Duration::from_secs(30)).await;
        let err = c.stderr();
        assert_eq!(code, 2, "{head}: {err}");
        assert!(err.contains(at), "{head}: expected {at} in {err}");
        assert!(err.contains(what), "{head}: expected {what} in {err}");
    }
    assert_eq!(target.get(|s| &s.requests), 0, "no traffic from bad input");
    assert_eq!(target.get(|s| &s.connections), 0);
}
