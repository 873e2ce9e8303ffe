//! Properties of the response reader over generated input: arbitrary bytes
//! split at arbitrary points never panic and never buffer past the limits,
//! and a valid response reads the same however its reads fall.
//!
//! Briefly in CI (proptest's 256 cases); long with `PROPTEST_CASES=200000`.

use proptest::prelude::*;

use super::*;

/// What reading one split response gave.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    status: u16,
    keep_alive: bool,
    body_bytes: u64,
    body: Vec<u8>,
}

/// Feeds `wire` cut at `cuts` (sorted offsets), checking after every read
/// that nothing was buffered past its limit; then the end of the stream.
fn feed_split(
    wire: &[u8],
    cuts: &[usize],
    head_only: bool,
    limit: u64,
) -> Result<Read, ParseError> {
    let mut r = ResponseReader::new(head_only, limit);
    let mut pending = Vec::new();
    let mut body = Vec::new();
    let mut from = 0;
    let ends = cuts.iter().copied().chain(std::iter::once(wire.len()));
    for to in ends {
        let to = to.clamp(from, wire.len());
        let fed = r.feed(&wire[from..to], &mut pending, Some(&mut body));
        assert!(pending.len() <= MAX_HEAD, "pending {}", pending.len());
        assert!(body.len() as u64 <= limit, "kept {} > {limit}", body.len());
        assert!(
            body.capacity() as u64 <= limit.max(8),
            "capacity {}",
            body.capacity()
        );
        if let Progress::Done { .. } = fed? {
            return Ok(done(r, body));
        }
        from = to;
    }
    r.eof()?;
    Ok(done(r, body))
}

fn done(r: ResponseReader, body: Vec<u8>) -> Read {
    Read {
        status: r.status,
        keep_alive: r.keep_alive,
        body_bytes: r.body_bytes,
        body,
    }
}

/// Cut points for a wire of `len` bytes.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|x| x % (len + 1)).collect();
    c.sort_unstable();
    c
}

/// How a generated response frames its body.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunk sizes cycle through these (each at least 1); extensions and
    /// trailers when asked.
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailers: bool,
    },
    UntilClose,
    NoContent,
    Head,
}

#[derive(Debug, Clone)]
struct Valid {
    informational: Vec<u16>,
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    close: bool,
    body: Vec<u8>,
}

impl Valid {
    fn wire(&self) -> Vec<u8> {
        let mut w = Vec::new();
        for s in &self.informational {
            w.extend_from_slice(format!("HTTP/1.1 {s} Info\r\nX-Info: 1\r\n\r\n").as_bytes());
        }
        let status = match self.framing {
            Framing::NoContent => 204,
            _ => self.status,
        };
        w.extend_from_slice(format!("HTTP/1.1 {status} Whatever\r\n").as_bytes());
        for (n, v) in &self.headers {
            w.extend_from_slice(format!("X-{n}: {v}\r\n").as_bytes());
        }
        if self.close {
            w.extend_from_slice(b"Connection: close\r\n");
        }
        match &self.framing {
            Framing::Length | Framing::Head => {
                w.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                if matches!(self.framing, Framing::Length) {
                    w.extend_from_slice(&self.body);
                }
            }
            Framing::Chunked {
                sizes,
                ext,
                trailers,
            } => {
                w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                    w.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
                    if *ext {
                        w.extend_from_slice(b";name=\"v\"");
                    }
                    w.extend_from_slice(b"\r\n");
                    w.extend_from_slice(chunk);
                    w.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                w.extend_from_slice(b"0\r\n");
                if *trailers {
                    w.extend_from_slice(b"X-Trailer: t\r\n");
                }
                w.extend_from_slice(b"\r\n");
            }
            Framing::UntilClose => {
                w.extend_from_slice(b"\r\n");
                w.extend_from_slice(&self.body);
            }
            Framing::NoContent => w.extend_from_slice(b"\r\n"),
        }
        w
    }

    /// What any reading of it must give.
    fn expected(&self) -> Read {
        let has_body = matches!(
            self.framing,
            Framing::Length | Framing::Chunked { .. } | Framing::UntilClose
        );
        let body = if has_body {
            self.body.clone()
        } else {
            Vec::new()
        };
        Read {
            status: match self.framing {
                Framing::NoContent => 204,
                _ => self.status,
            },
            keep_alive: !self.close && !matches!(self.framing, Framing::UntilClose),
            body_bytes: body.len() as u64,
            body,
        }
    }
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(1usize..40, 1..4),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(sizes, ext, trailers)| Framing::Chunked {
                sizes,
                ext,
                trailers
            }),
        Just(Framing::UntilClose),
        Just(Framing::NoContent),
        Just(Framing::Head),
    ]
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        prop::collection::vec(prop_oneof![Just(100u16), Just(102), Just(103)], 0..3),
        200u16..600,
        prop::collection::vec(
            ("[A-Za-z][A-Za-z0-9-]{0,12}", "[!-~]([ -~]{0,30}[!-~])?"),
            0..6,
        ),
        framing(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_filter("204 and 304 carry no body", |v| v.1 != 204 && v.1 != 304)
        .prop_map(
            |(informational, status, headers, framing, close, body)| Valid {
                informational,
                status,
                headers,
                framing,
                close,
                body,
            },
        )
}

/// Bytes that look enough like a response head to reach the framing code.
fn headish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
        Just(b"HTTP/1.0 100 Continue\r\n\r\n".to_vec()),
        Just(b"Content-Length: ".to_vec()),
        Just(b"Transfer-Encoding: ".to_vec()),
        Just(b"chunked".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        "[0-9a-fA-F;, +-]{1,6}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        wire in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), headish()],
        raw_cuts in prop::collection::vec(any::<usize>(), 0..8),
        head_only in any::<bool>(),
        limit in 0u64..64,
    ) {
        let _ = feed_split(&wire, &cuts(wire.len(), &raw_cuts), head_only, limit);
    }

    #[test]
    fn a_long_head_is_refused_in_bounded_memory(
        len in (MAX_HEAD - 100)..(2 * MAX_HEAD),
        raw_cuts in prop::collection::vec(any::<usize>(), 1..12),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        wire.resize(len, b'a');
        // Never completes: the limit, not the end of the stream, must stop it.
        let read = feed_split(&wire, &cuts(wire.len(), &raw_cuts), false, 0);
        prop_assert!(read.is_err());
    }

    #[test]
    fn a_valid_response_reads_the_same_however_split(
        v in valid(),
        raw_cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire = v.wire();
        let head_only = matches!(v.framing, Framing::Head);
        let whole = feed_split(&wire, &[], head_only, u64::MAX);
        prop_assert_eq!(whole.as_ref(), Ok(&v.expected()));
        let split = feed_split(&wire, &cuts(wire.len(), &raw_cuts), head_only, u64::MAX);
        prop_assert_eq!(split, whole);
    }
}
