//! Headless Chromium driven over the DevTools protocol (a minimal WebSocket client): load a page,
//! run script in it, collect its console errors and exceptions, take a screenshot.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api_client::ApiClient;
use crate::process::Proc;
use crate::serve::{eventually, require_tool};

/// How long one DevTools command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// A headless Chromium with one page, and what that page reported as errors.
pub struct Browser {
    _proc: Proc,
    ws: TcpStream,
    next_id: u64,
    /// Console errors, uncaught exceptions and error-level log entries (failed requests), in order.
    pub errors: Vec<String>,
}

impl Browser {
    /// Starts Chromium on `url` (profile and output under `dir`) and attaches to its page.
    pub async fn open(url: &str, dir: &Path) -> Browser {
        let chromium = require_tool("chromium", "chromium");
        let profile = dir.join("chromium-profile");
        let profile_arg = format!("--user-data-dir={}", profile.display());
        let mut proc = Proc::spawn(
            "chromium",
            &chromium,
            &[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1280,1500",
                &profile_arg,
                "about:blank",
            ],
            dir,
        );
        let ws_url = proc
            .announced("DevTools listening on", Duration::from_secs(60))
            .await;
        let host = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let http = ApiClient::new(&host, None);
        let page_ws = eventually(Duration::from_secs(30), "a page target", || {
            let http = http.clone();
            async move {
                let list = http.get("/json/list").await.json();
                list.as_array()?
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .map(str::to_owned)
            }
        })
        .await;
        let path = format!(
            "/{}",
            page_ws
                .trim_start_matches("ws://")
                .split_once('/')
                .map_or("", |(_, p)| p)
        );
        let ws = handshake(&host, &path).await;
        let mut b = Browser {
            _proc: proc,
            ws,
            next_id: 0,
            errors: Vec::new(),
        };
        b.call("Runtime.enable", serde_json::json!({})).await;
        b.call("Log.enable", serde_json::json!({})).await;
        b.call("Page.enable", serde_json::json!({})).await;
        b.call("Page.navigate", serde_json::json!({ "url": url }))
            .await;
        b
    }

    /// Sends one command and waits for its result; events that arrive meanwhile are checked for errors.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({ "id": id, "method": method, "params": params });
        send_text(&mut self.ws, msg.to_string().as_bytes()).await;
        tokio::time::timeout(COMMAND_DEADLINE, async {
            loop {
                let text = read_message(&mut self.ws).await;
                let v: serde_json::Value = serde_json::from_slice(&text).expect("DevTools JSON");
                if v["id"].as_u64() == Some(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method}: {e}");
                    }
                    return v["result"].clone();
                }
                self.note_event(&v);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {COMMAND_DEADLINE:?}"))
    }

    fn note_event(&mut self, v: &serde_json::Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]));
            }
            _ => {}
        }
    }

    /// Evaluates `expr` in the page and returns its value (awaiting a promise).
    pub async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            )
            .await;
        let data = r["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// The WebSocket opening handshake on `path`.
async fn handshake(host: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(host).await.expect("connect to DevTools");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "handshake answer too long");
        s.read_exact(&mut byte)
            .await
            .expect("read handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "DevTools refused the WebSocket: {head}"
    );
    s
}

/// One masked text frame, as a client must send.
async fn send_text(s: &mut TcpStream, payload: &[u8]) {
    let mut frame = vec![0x81u8];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("send frame");
}

/// The next whole message (continuation frames joined); control frames are skipped.
async fn read_message(s: &mut TcpStream) -> Vec<u8> {
    let mut message = Vec::new();
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.expect("read frame header");
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.expect("read length");
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.expect("read length");
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        assert!(len < 64 << 20, "DevTools frame of {len} bytes");
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.expect("read payload");
        match opcode {
            0x8 => panic!("DevTools closed the WebSocket"),
            0x9 | 0xA => continue,
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return message;
        }
    }
}
