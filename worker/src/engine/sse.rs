//! A `get:` step read as server-sent events: its own connection, the response head, then events counted as they arrive until the step has its number of them.
//!
//! The stream gets a connection of its own (closed when the step ends), so
//! the user's keep-alive HTTP connection is never left holding an endless
//! body. Events are framed by blank lines (`\n\n` or `\r\n\r\n`); a block with
//! no `data` line (a comment, a keep-alive) is not an event.

use std::time::{Duration, Instant};

use squall_common::scenario::sse::SseSpec;
use squall_common::scenario::sse::{SSE_FIRST_METHOD, SSE_METHOD};
use squall_common::{EndpointKey, template::RenderError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prepared::PreparedRequest;
use super::streams::OpenStreams;
use super::user::ThreadCtx;
use crate::error::WorkerError;
use crate::http::{ErrorKind, Outcome};

/// The largest response head, chunk-size line and undelivered event: a
/// target's stream is input, bounded like any other.
const MAX_HEAD: usize = 64 << 10;
const MAX_EVENT: usize = 1 << 20;

/// A stream step compiled once: its event count and rows.
#[derive(Debug)]
pub struct PreparedSse {
    pub events: u32,
    first_endpoint: usize,
    event_endpoint: usize,
}

/// Finds the stream's rows, named after its request.
pub fn prepare(
    spec: &SseSpec,
    name: &str,
    endpoints: &[EndpointKey],
) -> Result<PreparedSse, WorkerError> {
    let find = |method: &str| {
        endpoints
            .iter()
            .position(|e| e.name == name && e.method == method)
            .ok_or_else(|| WorkerError::Scenario(format!("`{method} {name}` is not an endpoint")))
    };
    Ok(PreparedSse {
        events: spec.events,
        first_endpoint: find(SSE_FIRST_METHOD)?,
        event_endpoint: find(SSE_METHOD)?,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sends the GET on a new connection and reads events until there are
/// `events` of them; records the GET's row once (its latency: until the
/// last event), `SSEFIRST` once and `SSE` per event. Returns the error kind
/// if the stream failed.
pub async fn run(
    ctx: &ThreadCtx,
    req: &PreparedRequest,
    sse: &PreparedSse,
    request: Result<&[u8], RenderError>,
) -> Option<ErrorKind> {
    let start = Instant::now();
    let timeout = req.spec.timeout.unwrap_or(ctx.run.spec.timeout);
    let mut got = Got::default();
    let result = match request {
        Err(_) => Err(ErrorKind::Template),
        Ok(bytes) => tokio::time::timeout(timeout, stream(ctx, sse, bytes, start, &mut got))
            .await
            .unwrap_or(Err(ErrorKind::Timeout)),
    };
    let error = result
        .err()
        .or_else(|| got.status.filter(|s| *s != 200).map(|_| ErrorKind::Status));
    let us = micros(start.elapsed());
    ctx.recorder.borrow_mut().record(
        req.endpoint,
        &Outcome {
            status: got.status,
            error,
            latency_us: us,
            service_us: us,
            ttfb_us: got.head.map(|h| micros(h - start)),
            bytes: got.bytes,
        },
    );
    error
}

/// What a stream showed before it ended, however it ended.
#[derive(Default)]
struct Got {
    status: Option<u16>,
    head: Option<Instant>,
    bytes: u64,
}

async fn stream(
    ctx: &ThreadCtx,
    sse: &PreparedSse,
    request: &[u8],
    start: Instant,
    got: &mut Got,
) -> Result<(), ErrorKind> {
    let mut io = super::ws::connect_io(ctx).await?;
    // Open from the connection until the step ends, however it ends.
    let _open = ctx.run.open_streams.as_ref().map(OpenStreams::hold);
    io.write_all(request).await.map_err(|_| ErrorKind::Reset)?;
    let mut raw: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // The head.
    let (body_at, chunked) = loop {
        let n = io.read(&mut chunk).await.map_err(|_| ErrorKind::Reset)?;
        if n == 0 {
            return Err(ErrorKind::Closed);
        }
        got.bytes += n as u64;
        raw.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&raw) {
            Ok(httparse::Status::Complete(len)) => {
                got.head = Some(Instant::now());
                let status = resp.code.unwrap_or(0);
                got.status = Some(status);
                if status != 200 {
                    return Ok(());
                }
                let chunked = resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        && String::from_utf8_lossy(h.value)
                            .to_ascii_lowercase()
                            .contains("chunked")
                });
                break (len, chunked);
            }
            Ok(httparse::Status::Partial) if raw.len() < MAX_HEAD => {}
            _ => return Err(ErrorKind::Http),
        }
    };
    raw.drain(..body_at);
    let mut events = Events::default();
    let mut last = got.head.unwrap_or(start);
    let mut count = 0u32;
    let mut ended = false;
    loop {
        // Decode what arrived, then take every whole event out of it.
        if chunked {
            ended |= dechunk(&mut raw, &mut events.text)?;
        } else {
            events.text.append(&mut raw);
        }
        while let Some(is_event) = events.next() {
            if !is_event {
                continue;
            }
            let now = Instant::now();
            let mut rec = ctx.recorder.borrow_mut();
            let one = |us| Outcome {
                status: None,
                error: None,
                latency_us: us,
                service_us: us,
                ttfb_us: None,
                bytes: 0,
            };
            if count == 0 {
                rec.record(sse.first_endpoint, &one(micros(now - start)));
            }
            rec.record(sse.event_endpoint, &one(micros(now - last)));
            last = now;
            count += 1;
            if count >= sse.events {
                return Ok(());
            }
        }
        if events.text.len() > MAX_EVENT {
            return Err(ErrorKind::Http);
        }
        if ended {
            return Err(ErrorKind::Closed);
        }
        let n = io.read(&mut chunk).await.map_err(|_| ErrorKind::Reset)?;
        if n == 0 {
            return Err(ErrorKind::Closed);
        }
        got.bytes += n as u64;
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Moves whole chunks of `raw` into `out`; true at the last (empty) chunk.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, ErrorKind> {
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return if raw.len() > MAX_HEAD {
                Err(ErrorKind::Http)
            } else {
                Ok(false)
            };
        };
        let line = std::str::from_utf8(&raw[..line_end]).map_err(|_| ErrorKind::Http)?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| ErrorKind::Http)?;
        if size > MAX_EVENT {
            return Err(ErrorKind::Http);
        }
        if size == 0 {
            return Ok(true);
        }
        let end = line_end + 2 + size;
        if raw.len() < end + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&raw[line_end + 2..end]);
        raw.drain(..end + 2);
    }
}

/// Decoded stream text not yet split into events.
#[derive(Default)]
struct Events {
    text: Vec<u8>,
}

impl Events {
    /// Takes the next whole block: Some(true) for an event (it has a `data`
    /// field), Some(false) for a comment or keep-alive, None until one is whole.
    fn next(&mut self) -> Option<bool> {
        let lf = self
            .text
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| (i, 2));
        let crlf = self
            .text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4));
        let (at, len) = match (lf, crlf) {
            (Some(a), Some(b)) => {
                if a.0 <= b.0 {
                    a
                } else {
                    b
                }
            }
            (a, b) => a.or(b)?,
        };
        let is_event = self.text[..at]
            .split(|b| *b == b'\n')
            .any(|line| line.starts_with(b"data"));
        self.text.drain(..at + len);
        Some(is_event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_events_are_framed_within_bounds() {
        let mut raw = b"5\r\ndata:\r\n4\r\n 1\n\n\r\n3\r\n: x\r\n".to_vec();
        let mut ev = Events::default();
        assert_eq!(dechunk(&mut raw, &mut ev.text), Ok(false));
        assert_eq!(ev.next(), Some(true));
        assert_eq!(ev.next(), None);
        raw.extend_from_slice(b"2\r\n\n\n\r\n0\r\n\r\n");
        assert_eq!(dechunk(&mut raw, &mut ev.text), Ok(true));
        assert_eq!(ev.next(), Some(false), "a comment is not an event");
        let mut huge = b"fffffff\r\n".to_vec();
        assert_eq!(dechunk(&mut huge, &mut ev.text), Err(ErrorKind::Http));
    }
}
