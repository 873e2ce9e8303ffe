//! Server-sent events: a flow step's `sse:` key, which reads a GET's response as an event stream, and the rows it records.

use serde::{Deserialize, Serialize};

/// One row per stream: the time from sending the GET to its first event.
pub const SSE_FIRST_METHOD: &str = "SSEFIRST";
/// One row per event: the gap since the previous event (the first: since the response head).
pub const SSE_METHOD: &str = "SSE";

/// The most events one step may wait for.
pub const MAX_EVENTS: u32 = 1_000_000;

/// Whether a row of this method is an event-stream row (not a request).
pub fn is_sse_method(method: &str) -> bool {
    matches!(method, SSE_FIRST_METHOD | SSE_METHOD)
}

/// `sse: { events: 10 }` on a `get:` step, as written and as resolved: read
/// that many events, then close the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SseSpec {
    pub events: u32,
}

impl SseSpec {
    /// The rows a stream named `name` records into, besides its GET's own.
    pub fn endpoints(name: &str) -> [(String, String); 2] {
        [
            (name.to_owned(), SSE_FIRST_METHOD.to_owned()),
            (name.to_owned(), SSE_METHOD.to_owned()),
        ]
    }
}
