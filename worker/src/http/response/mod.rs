//! An HTTP/1.x response read incrementally from a byte stream: the head by
//! httparse, then the body framed by Content-Length, chunked encoding or EOF.
//!
//! Pure logic over byte slices, so the connection can feed it straight from a
//! read buffer that all users of an engine thread share: only a head split
//! across reads is copied, into the connection's own (normally empty) buffer.

/// The most response-head bytes we accept before calling the response broken.
const MAX_HEAD: usize = 64 * 1024;
/// Header lines parsed per response; more is a malformed response for us.
const MAX_HEADERS: usize = 100;

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid HTTP/1.x (bad head, bad framing, a protocol switch).
    Malformed,
    /// The stream ended before the response did.
    Incomplete,
    /// The body being kept (for `capture:`) would exceed its limit; reading
    /// stops there, so a target cannot make the worker buffer without end.
    BodyTooLarge,
}

/// What one `feed` call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    /// The response is complete; `extra` input bytes followed it.
    Done {
        extra: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` once one digit is seen, `ext` inside `;ext`.
    Size {
        size: u64,
        digits: bool,
        ext: bool,
    },
    Data(u64),
    /// After a chunk's data: expecting CRLF.
    DataEnd {
        cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilEof,
    Done,
}

#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    head_only: bool,
    /// The most decoded body bytes kept when a body buffer is given.
    body_limit: u64,
    pub status: u16,
    /// False when the server asked to close, or the body runs to EOF.
    pub keep_alive: bool,
    /// Body bytes after transfer decoding.
    pub body_bytes: u64,
    /// The final head's header fields, kept only when asked for (checks,
    /// header captures, cookies): a plain request copies none.
    pub headers: Option<Vec<(String, String)>>,
    /// `Set-Cookie` values of the final head, when collected for a cookie
    /// jar: allocated only when a response sets one.
    pub set_cookies: Option<Vec<String>>,
}

impl ResponseReader {
    /// `head_only` for HEAD requests, whose responses never carry a body;
    /// `body_limit` bounds the body kept when `feed` is given a buffer (a
    /// body that is only counted is never bounded: it costs no memory).
    pub fn new(head_only: bool, body_limit: u64) -> Self {
        ResponseReader {
            state: State::Head,
            head_only,
            body_limit,
            status: 0,
            keep_alive: true,
            body_bytes: 0,
            headers: None,
            set_cookies: None,
        }
    }

    /// Collects the final head's `Set-Cookie` values in [`ResponseReader::set_cookies`].
    pub fn collect_cookies(&mut self) {
        self.set_cookies = Some(Vec::new());
    }

    /// Keeps the final head's header fields in [`ResponseReader::headers`].
    pub fn keep_headers(&mut self) {
        self.headers = Some(Vec::new());
    }

    /// Consumes `input`. `pending` keeps a head split across reads; `body`,
    /// when given, receives the decoded body.
    pub fn feed(
        &mut self,
        input: &[u8],
        pending: &mut Vec<u8>,
        body: Option<&mut Vec<u8>>,
    ) -> Result<Progress, ParseError> {
        if self.state != State::Head {
            return self.body(input, body);
        }
        if pending.is_empty() {
            let n = self.heads(input)?;
            if self.state == State::Head {
                // The rest is the start of a head: keep it for the next read.
                pending.extend_from_slice(&input[n..]);
                return Ok(Progress::NeedMore);
            }
            return self.after_head(&input[n..], body);
        }
        pending.extend_from_slice(input);
        let mut joined = std::mem::take(pending);
        let progress = match self.heads(&joined) {
            Ok(n) if self.state == State::Head => {
                // Still inside a head (after any informational ones).
                joined.drain(..n);
                *pending = joined;
                return Ok(Progress::NeedMore);
            }
            Ok(n) => self.after_head(&joined[n..], body),
            Err(e) => Err(e),
        };
        // Keep the allocation for the next split head.
        *pending = joined;
        pending.clear();
        progress
    }

    /// The stream ended: complete only for a body that runs to EOF.
    pub fn eof(&mut self) -> Result<(), ParseError> {
        match self.state {
            State::UntilEof | State::Done => {
                self.state = State::Done;
                self.keep_alive = false;
                Ok(())
            }
            _ => Err(ParseError::Incomplete),
        }
    }

    /// Parses complete heads from `buf` (informational ones, then the
    /// final one) and returns the bytes they took; the state stays `Head`
    /// while the final head is incomplete.
    fn heads(&mut self, buf: &[u8]) -> Result<usize, ParseError> {
        let mut used = 0;
        while self.state == State::Head && used < buf.len() {
            match self.head(&buf[used..])? {
                Some(n) => used += n,
                None => break,
            }
        }
        Ok(used)
    }

    /// The body from its first byte in `rest`, after the final head.
    fn after_head(
        &mut self,
        rest: &[u8],
        body: Option<&mut Vec<u8>>,
    ) -> Result<Progress, ParseError> {
        // A declared length beyond the limit fails before any of it is read.
        if body.is_some()
            && let State::Length(len) = self.state
            && len > self.body_limit
        {
            return Err(ParseError::BodyTooLarge);
        }
        self.body(rest, body)
    }

    /// Parses a head from `buf`; Some(length) once complete.
    fn head(&mut self, buf: &[u8]) -> Result<Option<usize>, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let n = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ParseError::Malformed);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ParseError::Malformed),
        };
        let status = res.code.ok_or(ParseError::Malformed)?;
        self.status = status;
        if (100..200).contains(&status) {
            // 101 would hand the connection to another protocol.
            if status == 101 {
                return Err(ParseError::Malformed);
            }
            return Ok(Some(n));
        }
        if let Some(kept) = &mut self.headers {
            kept.clear();
            kept.extend(res.headers.iter().map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            }));
        }
        let http10 = res.version == Some(0);
        let mut length: Option<u64> = None;
        let mut coding = Codings::default();
        let mut close = http10;
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = content_length(h.value)?;
                // Repeated fields must agree (RFC 9110 8.6).
                if length.is_some_and(|l| l != v) {
                    return Err(ParseError::Malformed);
                }
                length = Some(v);
            } else if let Some(jar) = &mut self.set_cookies
                && h.name.eq_ignore_ascii_case("set-cookie")
            {
                jar.push(String::from_utf8_lossy(h.value).into_owned());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                coding.add(h.value)?;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                        close = false;
                    }
                }
            }
        }
        if coding.any {
            // HTTP/1.0 has no Transfer-Encoding: framing that uses it is
            // faulty (RFC 9112 6.1).
            if http10 {
                return Err(ParseError::Malformed);
            }
            // Transfer-Encoding overrides Content-Length, but a message with
            // both may be a smuggling attempt: never reuse its connection
            // (RFC 9112 6.1, 6.3).
            if length.is_some() {
                close = true;
            }
            length = None;
        }
        let chunked = coding.any && coding.last_chunked;
        // A final coding other than chunked: the body runs to the close
        // (RFC 9112 6.3, rule 4, for responses).
        let until_close = coding.any && !coding.last_chunked;
        self.keep_alive = !close;
        self.state = if self.head_only || status == 204 || status == 304 {
            State::Done
        } else if chunked {
            State::Chunked(Chunk::Size {
                size: 0,
                digits: false,
                ext: false,
            })
        } else if until_close {
            self.keep_alive = false;
            State::UntilEof
        } else if let Some(len) = length {
            if len == 0 {
                State::Done
            } else {
                State::Length(len)
            }
        } else {
            self.keep_alive = false;
            State::UntilEof
        };
        Ok(Some(n))
    }

    fn body(
        &mut self,
        mut input: &[u8],
        mut body: Option<&mut Vec<u8>>,
    ) -> Result<Progress, ParseError> {
        let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
        let mut take = |bytes: &[u8], total: &mut u64| {
            *total = total.saturating_add(bytes.len() as u64);
            match body.as_deref_mut() {
                Some(b) => keep(b, bytes, limit),
                None => Ok(()),
            }
        };
        loop {
            match self.state {
                State::Head => unreachable!("body() runs after the head"),
                State::Done => return Ok(self.done(input.len())),
                State::UntilEof => {
                    take(input, &mut self.body_bytes)?;
                    return Ok(Progress::NeedMore);
                }
                State::Length(left) => {
                    let n = left.min(input.len() as u64) as usize;
                    take(&input[..n], &mut self.body_bytes)?;
                    input = &input[n..];
                    if left == n as u64 {
                        self.state = State::Done;
                    } else {
                        self.state = State::Length(left - n as u64);
                        return Ok(Progress::NeedMore);
                    }
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = left.min(input.len() as u64) as usize;
                    take(&input[..n], &mut self.body_bytes)?;
                    input = &input[n..];
                    if left == n as u64 {
                        self.state = State::Chunked(Chunk::DataEnd { cr: false });
                    } else {
                        self.state = State::Chunked(Chunk::Data(left - n as u64));
                        return Ok(Progress::NeedMore);
                    }
                }
                State::Chunked(chunk) => {
                    let Some((&b, tail)) = input.split_first() else {
                        return Ok(Progress::NeedMore);
                    };
                    input = tail;
                    self.state = chunk_byte(chunk, b)?;
                }
            }
        }
    }

    fn done(&mut self, extra: usize) -> Progress {
        // Bytes after a complete response were never asked for: the
        // connection's framing can no longer be trusted.
        if extra > 0 {
            self.keep_alive = false;
        }
        Progress::Done { extra }
    }
}

/// Appends `bytes` to the kept body, never letting it (or its allocation)
/// grow past `limit`: the buffer doubles as usual, clamped to the limit.
fn keep(body: &mut Vec<u8>, bytes: &[u8], limit: usize) -> Result<(), ParseError> {
    let needed = body
        .len()
        .checked_add(bytes.len())
        .filter(|&n| n <= limit)
        .ok_or(ParseError::BodyTooLarge)?;
    if needed > body.capacity() {
        let target = needed.max(body.capacity().saturating_mul(2)).min(limit);
        body.reserve_exact(target - body.len());
    }
    body.extend_from_slice(bytes);
    Ok(())
}

/// A Content-Length value: 1*DIGIT (RFC 9112 6.2), or a list of identical
/// ones (RFC 9110 8.6); signs, spaces inside and overflow are refused.
fn content_length(value: &[u8]) -> Result<u64, ParseError> {
    let mut found: Option<u64> = None;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() {
            return Err(ParseError::Malformed);
        }
        let mut n: u64 = 0;
        for &b in item {
            if !b.is_ascii_digit() {
                return Err(ParseError::Malformed);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(ParseError::Malformed)?;
        }
        if found.is_some_and(|f| f != n) {
            return Err(ParseError::Malformed);
        }
        found = Some(n);
    }
    found.ok_or(ParseError::Malformed)
}

/// The transfer codings of every Transfer-Encoding field, read as the one
/// list they make together (RFC 9110 5.3): only the final coding decides
/// the framing, whichever field line it is on.
#[derive(Debug, Default)]
struct Codings {
    any: bool,
    last_chunked: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) -> Result<(), ParseError> {
        let mut codings = value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .peekable();
        // A field with no coding at all says nothing a framing can follow.
        if codings.peek().is_none() {
            return Err(ParseError::Malformed);
        }
        for c in codings {
            // chunked is applied once and last (RFC 9112 6.1): one seen
            // before another coding means nobody can frame this body.
            if self.last_chunked {
                return Err(ParseError::Malformed);
            }
            let name = c.split(|&b| b == b';').next().unwrap_or(c).trim_ascii();
            if name.is_empty() {
                return Err(ParseError::Malformed);
            }
            self.any = true;
            self.last_chunked = name.eq_ignore_ascii_case(b"chunked");
        }
        Ok(())
    }
}

/// One byte of chunked framing outside chunk data.
fn chunk_byte(chunk: Chunk, b: u8) -> Result<State, ParseError> {
    let next = match chunk {
        Chunk::Size { size, digits, ext } => match b {
            b'\n' if digits && size == 0 => Chunk::Trailer { line: 0 },
            b'\n' if digits => Chunk::Data(size),
            b'\n' => return Err(ParseError::Malformed),
            _ if ext => chunk,
            b';' => Chunk::Size {
                size,
                digits,
                ext: true,
            },
            b'\r' | b' ' | b'\t' => chunk,
            _ => {
                let d = (b as char).to_digit(16).ok_or(ParseError::Malformed)?;
                // 2^60 bytes is far beyond any chunk; stop before overflow.
                if size >> 60 != 0 {
                    return Err(ParseError::Malformed);
                }
                Chunk::Size {
                    size: size << 4 | u64::from(d),
                    digits: true,
                    ext,
                }
            }
        },
        Chunk::DataEnd { cr } => match b {
            b'\r' if !cr => Chunk::DataEnd { cr: true },
            b'\n' => Chunk::Size {
                size: 0,
                digits: false,
                ext: false,
            },
            _ => return Err(ParseError::Malformed),
        },
        Chunk::Trailer { line } => match b {
            b'\n' if line == 0 => return Ok(State::Done),
            b'\n' => Chunk::Trailer { line: 0 },
            b'\r' => chunk,
            _ => Chunk::Trailer { line: line + 1 },
        },
        Chunk::Data(_) => unreachable!("chunk data is taken in bulk"),
    };
    Ok(State::Chunked(next))
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
