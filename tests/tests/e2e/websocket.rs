//! WebSocket flow steps: round trips against the demo target's chat across two
//! worker processes, counted against the server's own counts; a purpose-built
//! server that closes mid-stream, pings, or sends malformed frames; bad input;
//! server-sent events against the demo target's stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use squall_tests::{CountingTarget, TestRun, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::journeys::Demo;

/// The demo target's WebSocket counters (`/__squall/ws`).
async fn chat_stats(url: &str) -> serde_json::Value {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the demo target");
    let req = format!("GET /__squall/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("ws stats JSON")
}

fn row<'a>(report: &'a serde_json::Value, name: &str, method: &str) -> &'a serde_json::Value {
    report["endpoints"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["name"] == name && e["method"] == method)
        })
        .unwrap_or_else(|| panic!("no {method} {name} row in {}", report["endpoints"]))
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

const CHAT: &str = r#"
scenarios:
  s: { users: 8, spawn_rate: 50, duration: 3s }
user_classes:
  echoer:
    wait: { constant: 20ms }
    tasks:
      - name: chat
        flow:
          - name: connect chat
            ws_connect: "/ws/chat?delay_ms=5"
            headers: { X-User: "u{{ user_id }}" }
          - name: say
            ws_send: { json: { user: "{{ user_id }}", n: "{{ sequence() }}" } }
          - name: echo
            ws_receive: { json: { "$.user": { exists: true } } }
            timeout: 2s
            capture: { last: "$.n" }
          - name: say again
            ws_send: "again {{ last }}"
          - name: echo again
            ws_receive: { contains: again }
            timeout: 2s
"#;

/// Runs `yaml` against the demo target on two single-thread workers and
/// returns the run (its output directory) and report, once the coordinator
/// has exited 0.
async fn on_two_workers(demo: &Demo, yaml: &str) -> (TestRun, serde_json::Value) {
    let run = TestRun::new(yaml);
    let mut coord = run
        .coordinator(2, &demo.url, &["--wait-timeout", "30s"])
        .await;
    let _w1 = run.worker("w1", &["--threads", "1"]);
    let _w2 = run.worker("w2", &["--threads", "1"]);
    let code = coord.exit_code(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{}", coord.output());
    let report = run.report();
    (run, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_across_two_workers_match_the_demo_targets_own_counts() {
    let demo = Demo::start().await;
    let (_, report) = on_two_workers(&demo, CHAT).await;
    let say = n(&row(&report, "say", "WSSEND")["requests"]);
    let again = n(&row(&report, "say again", "WSSEND")["requests"]);
    let echo = row(&report, "echo", "WSMSG");
    let echo_again = row(&report, "echo again", "WSMSG");
    let received = n(&row(&report, "connect chat", "WSIN")["requests"]);
    assert!(say > 50, "too little traffic to mean anything: {say}");
    for r in [echo, echo_again] {
        assert_eq!(n(&r["failures"]), 0, "{r}");
    }
    // Each echo comes at least the server's 5 ms after its send.
    assert!(
        echo["latency_ms"]["min"].as_f64().unwrap_or(0.0) >= 5.0,
        "{echo}"
    );
    assert_eq!(n(&echo["requests"]), say, "one awaited echo per send");
    assert_eq!(n(&echo_again["requests"]), again);
    let connects = row(&report, "connect chat", "WS");
    assert_eq!(n(&connects["failures"]), 0, "{connects}");
    // The chat connection is kept across iterations: one handshake per echo user.
    assert!(n(&connects["requests"]) <= 8, "{connects}");
    // WebSocket rows are not HTTP requests: the totals leave them out.
    assert_eq!(n(&report["totals"]["requests"]), 0, "{}", report["totals"]);
    // The server's own counts: every message sent arrived once, every
    // message it sent was counted once on arrival.
    assert_eq!(received, say + again, "every echo arrived once");
    let sent = say + again;
    eventually(Duration::from_secs(10), "the server's counts", || async {
        let s = chat_stats(&demo.url).await;
        (n(&s["received"]) == sent && n(&s["sent"]) == received && n(&s["open"]) == 0)
            .then_some(())
            .or_else(|| {
                eprintln!("server {s}, report sent {sent} received {received}");
                None
            })
    })
    .await;
}

const HOLDERS: &str = r#"
scenarios:
  s: { users: 12, spawn_rate: 100, duration: 5s }
user_classes:
  holder:
    wait: { constant: 300ms }
    tasks:
      - name: chat
        flow:
          - name: connect chat
            ws_connect: "/ws/chat?delay_ms=1"
          - name: say
            ws_send: hi
          - name: echo
            ws_receive: { contains: hi }
            timeout: 2s
"#;

/// Users that keep one socket each show in the timeline as open connections
/// while they hold them, summed over two workers, and as none once the run
/// has closed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_counts_open_sockets_over_workers_and_none_after_close() {
    let demo = Demo::start().await;
    let (run, report) = on_two_workers(&demo, HOLDERS).await;
    let connects = row(&report, "connect chat", "WS");
    assert_eq!(
        n(&connects["requests"]),
        12,
        "one socket per user: {connects}"
    );
    assert_eq!(n(&connects["failures"]), 0, "{connects}");
    let timeline = report["timeline"].as_array().expect("timeline");
    let open: Vec<Option<u64>> = timeline
        .iter()
        .map(|p| p["open_connections"].as_u64())
        .collect();
    // Every user holds its socket from its first second to the end: once all
    // 12 are running, 12 are open, never more. The last two entries are left
    // out: a worker's stop snapshot (the users it stopped, the sockets left)
    // may land a second before the other's.
    let full: Vec<u64> = timeline[..timeline.len().saturating_sub(2)]
        .iter()
        .filter(|p| n(&p["users"]) == 12)
        .filter_map(|p| p["open_connections"].as_u64())
        .collect();
    assert!(full.len() >= 2, "too few full seconds: {open:?}");
    assert!(full.iter().all(|&o| o == 12), "{open:?}");
    assert!(open.iter().flatten().all(|&o| o <= 12), "{open:?}");
    // The last second is the stop's: every socket closed.
    assert_eq!(open.last().copied().flatten(), Some(0), "{open:?}");
    // The same in timeline.csv, as its last column.
    let csv = std::fs::read_to_string(run.out.join("timeline.csv")).expect("timeline.csv");
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.ends_with(",open_connections")),
        "{csv}"
    );
    assert!(csv.lines().any(|l| l.ends_with(",12")), "{csv}");
    assert!(csv.trim_end().ends_with(",0"), "{csv}");
    // The server agrees: nothing left open.
    eventually(
        Duration::from_secs(10),
        "the server's sockets closed",
        || async { (n(&chat_stats(&demo.url).await["open"]) == 0).then_some(()) },
    )
    .await;
}

/// An HTTP-only run carries no open-connection count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_sockets_has_no_open_connection_count() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  s: { users: 2, duration: 2s }\nuser_classes:\n  u: { wait: { constant: 100ms }, tasks: [ { name: a, get: /a } ] }\n",
    );
    let (_, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(60))
        .await;
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(!timeline.is_empty());
    assert!(
        timeline.iter().all(|p| p.get("open_connections").is_none()),
        "{timeline:?}"
    );
    let csv = std::fs::read_to_string(run.out.join("timeline.csv")).expect("timeline.csv");
    assert!(!csv.contains("open_connections"), "{csv}");
}

/// What the purpose-built server saw.
#[derive(Default)]
struct Seen {
    /// Data messages read from clients, and echoed back.
    read: AtomicU64,
    echoed: AtomicU64,
    pongs: AtomicU64,
}

/// A WebSocket server that misbehaves by path: `/close` echoes two messages
/// and then closes, `/ping` pings before echoing, `/garbage` answers the
/// first message with a frame of a reserved opcode.
async fn hostile_server() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = counts.clone();
            tokio::spawn(async move {
                let mut path = String::new();
                // The signature is tungstenite's handshake callback, error type included.
                #[allow(clippy::result_large_err)]
                let callback = |req: &Request, resp: Response| {
                    path = req.uri().path().to_owned();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                if path == "/ping" && ws.send(Message::Ping("hi".into())).await.is_err() {
                    return;
                }
                let mut echoed = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Pong(_) => {
                            seen.pongs.fetch_add(1, Ordering::Relaxed);
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            seen.read.fetch_add(1, Ordering::Relaxed);
                            if path == "/garbage" {
                                // FIN + opcode 0xF: reserved, a protocol error.
                                let _ = ws.get_mut().write_all(&[0x8F, 0x00]).await;
                                return;
                            }
                            if path == "/close" && echoed == 2 {
                                let _ = ws.close(None).await;
                                continue;
                            }
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                            echoed += 1;
                            seen.echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (url, seen)
}

fn hostile_scenario(path: &str) -> String {
    format!(
        r#"
scenarios:
  s: {{ users: 3, spawn_rate: 50, duration: 2s }}
user_classes:
  u:
    wait: {{ constant: 50ms }}
    tasks:
      - name: talk
        flow:
          - {{ name: connect, ws_connect: "{path}" }}
          - {{ name: send, ws_send: hello }}
          - {{ name: reply, ws_receive: {{}}, timeout: 2s }}
"#
    )
}

async fn run_against(url: &str, path: &str) -> serde_json::Value {
    let run = TestRun::new(&hostile_scenario(path));
    run.local_ok(2, url, Duration::from_secs(60)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_pings_or_breaks_frames_gives_clear_kinds_and_loses_no_count() {
    let (url, seen) = hostile_server().await;

    // Closed mid-stream: the third reply never comes, the socket ends, the
    // next iteration reconnects.
    let report = run_against(&url, "/close").await;
    let reply = row(&report, "reply", "WSMSG");
    let send = row(&report, "send", "WSSEND");
    let ok_sends = n(&send["requests"]) - n(&send["failures"]);
    assert_eq!(
        n(&reply["requests"]),
        ok_sends,
        "one reply awaited per send"
    );
    assert!(n(&reply["errors"]["closed"]) > 0, "{reply}");
    assert_eq!(
        n(&reply["requests"]) - n(&reply["failures"]),
        seen.echoed.load(Ordering::Relaxed),
        "every echo counted once"
    );
    assert!(
        n(&row(&report, "connect", "WS")["requests"]) > 3,
        "reconnects"
    );
    assert_eq!(
        n(&row(&report, "connect", "WSIN")["requests"]),
        seen.echoed.load(Ordering::Relaxed)
    );

    // Pings are answered; round trips go on undisturbed.
    let before = seen.echoed.load(Ordering::Relaxed);
    let report = run_against(&url, "/ping").await;
    let reply = row(&report, "reply", "WSMSG");
    assert_eq!(n(&reply["failures"]), 0, "{reply}");
    assert_eq!(
        n(&reply["requests"]),
        seen.echoed.load(Ordering::Relaxed) - before
    );
    assert!(
        seen.pongs.load(Ordering::Relaxed) >= 3,
        "every user answered its ping"
    );

    // A reserved opcode: a protocol error, counted on the step that waited.
    let report = run_against(&url, "/garbage").await;
    let reply = row(&report, "reply", "WSMSG");
    assert!(n(&reply["requests"]) > 0);
    assert_eq!(
        n(&reply["errors"]["protocol"]),
        n(&reply["requests"]),
        "{reply}"
    );
    let flow = row(&report, "talk", "FLOW");
    assert_eq!(
        n(&flow["errors"]["protocol"]),
        n(&reply["requests"]),
        "{flow}"
    );

    // Nothing listens: the handshake fails as `connect`, later steps as `no_socket`.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let report = run_against(&format!("http://127.0.0.1:{closed_port}"), "/x").await;
    let connect = row(&report, "connect", "WS");
    assert!(n(&connect["errors"]["connect"]) > 0, "{connect}");
    assert_eq!(n(&connect["errors"]["connect"]), n(&connect["requests"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misused_sockets_are_refused_with_their_line_before_any_traffic() {
    let cases = [
        (
            "  - name: f\n    flow:\n      - ws_send: hi\n",
            "uses a WebSocket this user never opens",
            8,
        ),
        (
            "  - name: f\n    flow:\n      - ws_connect: /ws\n      - ws_send: hi\n      - ws_close: true\n      - ws_receive: {}\n",
            "after the `ws_close` of step 2",
            11,
        ),
        (
            "  - name: f\n    flow:\n      - ws_connect: /ws\n      - get: /ok\n",
            "opened but nothing ever sends or receives",
            8,
        ),
        ("  - ws_connect: /ws\n", "is a flow step", 0),
        (
            "  - name: f\n    flow:\n      - { ws_connect: /ws, ws_send: hi }\n",
            "a step is one of",
            0,
        ),
        (
            "  - name: f\n    flow:\n      - ws_connect: /ws\n      - { ws_send: hi, capture: { x: \"$.a\" } }\n",
            "put them on a `ws_receive` step",
            0,
        ),
        (
            "  - name: f\n    flow:\n      - ws_connect: /ws\n      - ws_send: \"{{ nope }}\"\n",
            "unknown variable `nope`",
            9,
        ),
        (
            "  - name: f\n    flow:\n      - { get: \"http://127.0.0.1:9/sse\", sse: { events: 1 } }\n",
            "not supported on `sse` steps",
            0,
        ),
    ];
    let target = CountingTarget::start().await;
    for (tasks, message, line) in cases {
        let tasks: String = tasks.lines().map(|l| format!("    {l}\n")).collect();
        let yaml = format!(
            "scenarios:\n  s: {{ users: 1, duration: 1s }}\nuser_classes:\n  u:\n    tasks:\n{tasks}"
        );
        let run = TestRun::named("ws.yaml", &yaml);
        let mut c = run.local(1, &target.url());
        let code = c.exit_code(Duration::from_secs(30)).await;
        let err = c.stderr();
        assert_eq!(code, 2, "{yaml}\n{err}");
        assert!(err.contains(message), "{yaml}\n{err}");
        if line > 0 {
            assert!(err.contains(&format!("ws.yaml:{line}:")), "{yaml}\n{err}");
        }
    }
    assert_eq!(target.total(), 0, "nothing was sent");
}

const TICKS: &str = r#"
scenarios:
  s: { users: 4, spawn_rate: 50, duration: 2s }
user_classes:
  u:
    tasks:
      - name: watch
        continue_on_failure: true
        flow:
          - name: ticks
            get: "/sse/ticks?n=3&every_ms=20"
            sse: { events: 3 }
            timeout: 2s
          - name: short
            get: "/sse/ticks?n=1&every_ms=5"
            sse: { events: 2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_counted_with_first_event_and_gap_percentiles() {
    let demo = Demo::start().await;
    let run = TestRun::new(TICKS);
    let (_, report) = run.local_ok(2, &demo.url, Duration::from_secs(60)).await;
    let get = row(&report, "ticks", "GET");
    let streams = n(&get["requests"]);
    assert!(streams > 10, "{get}");
    assert_eq!(n(&get["failures"]), 0, "{get}");
    let first = row(&report, "ticks", "SSEFIRST");
    let events = row(&report, "ticks", "SSE");
    assert_eq!(n(&first["requests"]), streams, "one first event per stream");
    assert_eq!(n(&events["requests"]), 3 * streams, "every event once");
    // The server waits 20 ms before each event.
    assert!(
        first["latency_ms"]["min"].as_f64().unwrap_or(0.0) >= 20.0,
        "{first}"
    );
    assert!(
        events["latency_ms"]["p50"].as_f64().unwrap_or(0.0) >= 15.0,
        "{events}"
    );
    // A stream that ends before its count fails as `closed`, its event still counted.
    let short = row(&report, "short", "GET");
    assert_eq!(
        n(&short["errors"]["closed"]),
        n(&short["requests"]),
        "{short}"
    );
    assert_eq!(
        n(&row(&report, "short", "SSE")["requests"]),
        n(&short["requests"])
    );
    // The HTTP totals hold the GETs, not the event rows.
    assert_eq!(
        n(&report["totals"]["requests"]),
        streams + n(&short["requests"])
    );
    // Streams are counted as open connections too: each second has a count
    // (at most one stream per user), and none is left after the stop.
    let open: Vec<Option<u64>> = report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|p| p["open_connections"].as_u64())
        .collect();
    assert!(open.iter().all(Option::is_some), "{open:?}");
    assert!(open.iter().flatten().all(|&o| o <= 4), "{open:?}");
    assert_eq!(open.last().copied().flatten(), Some(0), "{open:?}");
    // Every event the server wrote was counted once.
    let total = n(&events["requests"]) + n(&row(&report, "short", "SSE")["requests"]);
    eventually(
        Duration::from_secs(10),
        "the server's event count",
        || async { (n(&chat_stats(&demo.url).await["events"]) == total).then_some(()) },
    )
    .await;
}
