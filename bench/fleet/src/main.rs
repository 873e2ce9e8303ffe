//! `fleet`: simulated workers over real gRPC streams, to measure how many the coordinator can merge on one core.
//!
//! Starts the real `coordinator` binary waiting for N workers, attaches N
//! simulated workers (each its own HTTP/2 connection) that answer Start with
//! one snapshot a second carrying E endpoints of realistic HDR histograms,
//! and reports the coordinator's CPU time over the steady part of the run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::Rng;
use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Hello, PROTOCOL_VERSION, Status, WorkerMessage, WorkerState,
};
use squall_common::snapshot::{EndpointDelta, EndpointKey, EndpointStats, Snapshot, record_micros};
use squall_proto::{CoordinatorClient, decode_coordinator_message, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Parser)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Endpoints per snapshot.
    #[arg(long, default_value_t = 20)]
    endpoints: usize,
    /// Requests per endpoint per snapshot (histogram entries).
    #[arg(long, default_value_t = 200)]
    requests: u64,
    /// Run length.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// The coordinator binary (default: next to this one).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// Measure `coordinator serve` instead of a headless run: the run is
    /// started over REST, one client follows the live SSE stream (as an open
    /// dashboard does) and `/metrics` is scraped every second.
    #[arg(long)]
    serve: bool,
}

/// One HTTP/1.1 request to serve's API (`Connection: close`); the status and body.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// Follows the SSE stream like an open dashboard, reading and dropping every event.
async fn follow_events(addr: String) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 after the ')'.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn snapshot(run_id: &str, seq: u64, endpoints: usize, requests: u64) -> Snapshot {
    let mut rng = rand::rng();
    let endpoints = (0..endpoints)
        .map(|e| {
            let mut s = EndpointStats::new();
            s.requests = requests;
            s.status.insert(200, requests);
            for _ in 0..requests {
                let us = 500 + rng.random_range(0..20_000u64) * (1 + (e as u64 % 5));
                record_micros(&mut s.latency, us);
                record_micros(&mut s.service, us);
                record_micros(&mut s.ttfb, us / 2);
            }
            (
                EndpointKey {
                    name: format!("endpoint {e}"),
                    method: "GET".into(),
                },
                EndpointDelta::encode(&s).expect("histograms encode"),
            )
        })
        .collect();
    Snapshot {
        run_id: run_id.to_owned(),
        seq,
        window_start_us: seq * 1_000_000,
        window_end_us: (seq + 1) * 1_000_000,
        active_users: 100,
        open_connections: None,
        dropped_iterations: 0,
        schedule_lag: Vec::new(),
        generator_lag: Vec::new(),
        endpoints,
    }
}

/// `text` as a JSON string literal.
fn serde_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn wire(m: &WorkerMessage) -> Result<pb::WorkerMessage> {
    Ok(pb::WorkerMessage::try_from(m)?)
}

/// One simulated worker: attach, then per run send one pre-encoded snapshot a second.
async fn simulated(addr: String, id: usize, endpoints: usize, requests: u64) -> Result<()> {
    let mut client = CoordinatorClient::connect(addr)
        .await?
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(64);
    tx.send(wire(&WorkerMessage::Hello(Hello {
        worker_id: format!("sim-{id}"),
        version: "fleet".into(),
        protocol_version: PROTOCOL_VERSION,
        cores: 1,
        labels: Default::default(),
    }))?)
    .await?;
    let mut inbound = client
        .attach(tonic::Request::new(ReceiverStream::new(rx)))
        .await?
        .into_inner();
    let mut run: Option<String> = None;
    let mut seq = 0u64;
    // Built once and resent with a new sequence number: the fleet must not
    // spend the CPU the coordinator is being measured with.
    let template = snapshot("", 0, endpoints, requests);
    let make = |run_id: &str, seq: u64| Snapshot {
        run_id: run_id.to_owned(),
        seq,
        window_start_us: seq * 1_000_000,
        window_end_us: (seq + 1) * 1_000_000,
        ..template.clone()
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Some(m) = m? else { return Ok(()) };
                match decode_coordinator_message(m)? {
                    CoordinatorMessage::Start(s) => { run = Some(s.run_id.clone()); seq = 0; }
                    CoordinatorMessage::Stop { run_id, .. } => {
                        tx.send(wire(&WorkerMessage::Snapshot(make(&run_id, seq)))?).await?;
                        seq += 1;
                        tx.send(wire(&WorkerMessage::Status(Status { run_id, state: WorkerState::Stopped, reason: String::new(), snapshots_sent: seq }))?).await?;
                        run = None;
                    }
                    CoordinatorMessage::Shutdown { .. } => return Ok(()),
                    _ => {}
                }
            }
            _ = tick.tick() => {
                tx.send(wire(&WorkerMessage::Heartbeat(Heartbeat { state: WorkerState::Running, active_users: 100, cpu_percent: 0.0 }))?).await?;
                if let Some(r) = &run {
                    tx.send(wire(&WorkerMessage::Snapshot(make(r, seq)))?).await?;
                    seq += 1;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let duration = squall_common::duration::parse(&args.duration)?;
    let coordinator = match args.coordinator {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("coordinator"),
    };
    let dir = std::env::temp_dir().join(format!("squall-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let scenario = dir.join("fleet.yaml");
    // The scenario names the endpoints the simulated workers report, so their snapshots are merged, not refused.
    let tasks: Vec<String> = (0..args.endpoints)
        .map(|e| format!("{{ name: endpoint {e}, get: /e{e} }}"))
        .collect();
    let scenario_text = format!(
        "host: http://127.0.0.1:9\nscenarios:\n  fleet: {{ users: 1, duration: 1h }}\nuser_classes:\n  u: {{ tasks: [ {} ] }}\n",
        tasks.join(", ")
    );
    std::fs::write(&scenario, &scenario_text)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bind = format!("127.0.0.1:{port}");
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let data = dir.join("data");
    let workers = args.workers.to_string();
    let secs = format!("{}s", duration.as_secs());
    let out = dir.join("out");
    let command: Vec<&str> = if args.serve {
        vec![
            "serve",
            "--bind",
            &bind,
            "--http",
            &http_addr,
            "--data",
            data.to_str().context("utf8")?,
        ]
    } else {
        vec![
            "-f",
            scenario.to_str().context("utf8")?,
            "--workers",
            &workers,
            "--bind",
            &bind,
            "--duration",
            &secs,
            "--headless",
            "--wait-timeout",
            "120s",
            "--out",
            out.to_str().context("utf8")?,
        ]
    };
    let mut child = tokio::process::Command::new(&coordinator)
        .args(&command)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", coordinator.display()))?;
    let pid = child.id().context("pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addr = format!("http://{bind}");
    let attach_start = Instant::now();
    for id in 0..args.workers {
        let addr = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = simulated(addr, id, args.endpoints, args.requests).await {
                eprintln!("sim-{id}: {e}");
            }
        });
    }
    let mut run_id = String::new();
    if args.serve {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, body) = http(&http_addr, "GET", "/api/workers", "").await?;
            if body.matches("\"id\"").count() >= args.workers {
                break;
            }
            if Instant::now() > deadline {
                bail!("the simulated workers did not all attach to serve within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let start = format!(
            "{{\"file\": {}, \"duration\": \"{secs}\"}}",
            serde_json_string(&scenario_text)
        );
        let (status, body) = http(&http_addr, "POST", "/api/runs", &start).await?;
        if status != 202 {
            bail!("serve refused the run: {status} {body}");
        }
        run_id = body
            .split("\"run_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("run id")?
            .to_owned();
        tokio::spawn(follow_events(http_addr.clone()));
        let scrape_addr = http_addr.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let _ = http(&scrape_addr, "GET", "/metrics", "").await;
            }
        });
    }
    // Skip the attach storm and the first seconds, then measure a steady window.
    let warmup = Duration::from_secs(5).min(duration / 3);
    tokio::time::sleep(warmup + Duration::from_secs(2)).await;
    let window = duration
        .saturating_sub(warmup * 2)
        .max(Duration::from_secs(3));
    let (t_a, c_a) = (Instant::now(), cpu_ticks(pid)?);
    tokio::time::sleep(window).await;
    let (t_b, c_b) = (Instant::now(), cpu_ticks(pid)?);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (c_b - c_a) as f64 / hz / (t_b - t_a).as_secs_f64();
    let (status, report) = if args.serve {
        let path = format!("/api/runs/{run_id}");
        let deadline = Instant::now() + duration + Duration::from_secs(60);
        while Instant::now() < deadline {
            let (_, body) = http(&http_addr, "GET", &path, "").await?;
            if !body.contains("\"state\":\"running\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let report = std::fs::read_to_string(data.join("runs").join(&run_id).join("report.json"))
            .unwrap_or_default();
        let _ = child.kill().await;
        (Ok(child.wait().await), report)
    } else {
        let status = tokio::time::timeout(duration + Duration::from_secs(60), child.wait()).await;
        (
            status,
            std::fs::read_to_string(dir.join("out/report.json")).unwrap_or_default(),
        )
    };
    // Merged, not refused: between issue 12 and issue 15's fix the snapshots
    // were refused and a report with 0 requests was still written.
    let merged: u64 = serde_json::from_str::<serde_json::Value>(&report)
        .ok()
        .and_then(|r| r["totals"]["requests"].as_u64())
        .unwrap_or(0);
    let per_snapshot = args.workers as u64 * args.endpoints as u64 * args.requests;
    println!(
        "{}{} workers x {} endpoints x {} requests/endpoint, 1 snapshot/s each: coordinator CPU {:.1}% of one core (steady {:.0}s window; attach took {:.1}s; run exit {:?}; requests merged into the report: {merged}, {:.1} seconds' worth of snapshots from every worker)",
        if args.serve {
            "serve (SSE client, /metrics every 1 s): "
        } else {
            "headless: "
        },
        args.workers,
        args.endpoints,
        args.requests,
        cpu * 100.0,
        window.as_secs_f64(),
        (t_a - attach_start - warmup - Duration::from_secs(2))
            .as_secs_f64()
            .max(0.0),
        status.ok().and_then(|s| s.ok()).and_then(|s| s.code()),
        merged as f64 / per_snapshot as f64,
    );
    if merged == 0 {
        bail!("the coordinator merged no snapshot (no report, or every snapshot refused)");
    }
    Ok(())
}
