//! How one request ended: its status, timings and bytes, or the kind of error reports classify it under.

/// How a request ended, as classified in reports (`errors {kind: count}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Tls,
    Timeout,
    Reset,
    Http,
    /// The server broke the protocol: an HTTP/2 server's bad frames,
    /// malformed or oversized headers, a GOAWAY or RST_STREAM saying so; a
    /// WebSocket frame that breaks it (or a message above 1 MiB).
    Protocol,
    /// A body kept for `capture:` outgrew `defaults.max_capture_body`.
    BodyTooLarge,
    Status,
    Check,
    /// A poll's last attempt, and its flow, when the condition never held.
    PollLimit,
    Template,
    Interrupted,
    /// A WebSocket upgrade the server refused or answered wrongly.
    Handshake,
    /// A WebSocket the server closed (close frame or end of stream).
    Closed,
    /// A WebSocket step of a user whose socket is not open (its connect failed).
    NoSocket,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Http => "http",
            ErrorKind::Protocol => "protocol",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::Status => "status",
            ErrorKind::Check => "check",
            ErrorKind::PollLimit => "poll_limit",
            ErrorKind::Template => "template",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Handshake => "handshake",
            ErrorKind::Closed => "closed",
            ErrorKind::NoSocket => "no_socket",
        }
    }
}

/// One finished request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<ErrorKind>,
    pub latency_us: u64,
    pub service_us: u64,
    pub ttfb_us: Option<u64>,
    pub bytes: u64,
}
