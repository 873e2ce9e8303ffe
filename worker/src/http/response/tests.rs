//! The response reader on hand-written responses, each fed whole and split at every point.

use super::*;

/// Feeds `wire` in pieces of `step` bytes; returns the reader, the body and extra bytes.
fn read(
    wire: &[u8],
    step: usize,
    head_only: bool,
) -> Result<(ResponseReader, Vec<u8>, usize), ParseError> {
    read_limited(wire, step, head_only, u64::MAX)
}

fn read_limited(
    wire: &[u8],
    step: usize,
    head_only: bool,
    limit: u64,
) -> Result<(ResponseReader, Vec<u8>, usize), ParseError> {
    let mut r = ResponseReader::new(head_only, limit);
    let mut pending = Vec::new();
    let mut body = Vec::new();
    for piece in wire.chunks(step) {
        if let Progress::Done { extra } = r.feed(piece, &mut pending, Some(&mut body))? {
            return Ok((r, body, extra));
        }
    }
    r.eof()?;
    Ok((r, body, 0))
}

fn every_split(wire: &[u8], head_only: bool) -> (ResponseReader, Vec<u8>, usize) {
    let whole = read(wire, wire.len(), head_only).expect("whole");
    for step in 1..wire.len() {
        let split = read(wire, step, head_only).expect("split");
        assert_eq!(split.1, whole.1, "body with step {step}");
        assert_eq!(split.0.status, whole.0.status, "status with step {step}");
        assert_eq!(
            split.0.body_bytes, whole.0.body_bytes,
            "bytes with step {step}"
        );
    }
    whole
}

#[test]
fn content_length_body_in_any_split() {
    let (r, body, extra) = every_split(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello",
        false,
    );
    assert_eq!((r.status, r.keep_alive, r.body_bytes), (200, true, 5));
    assert_eq!((body.as_slice(), extra), (&b"hello"[..], 0));
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let wire = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
    let (r, body, _) = every_split(wire, false);
    assert_eq!((r.status, r.keep_alive, r.body_bytes), (201, true, 31));
    assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
}

#[test]
fn body_until_eof_closes_the_connection() {
    let (r, body, _) = every_split(b"HTTP/1.1 200 OK\r\n\r\nstreamed", false);
    assert_eq!((r.keep_alive, body.as_slice()), (false, &b"streamed"[..]));
}

#[test]
fn no_body_for_head_204_304_and_zero_length() {
    let (r, _, _) = every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true);
    assert_eq!((r.body_bytes, r.keep_alive), (0, true));
    for wire in [
        &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ] {
        let (r, _, _) = every_split(wire, false);
        assert_eq!((r.body_bytes, r.keep_alive), (0, true));
    }
}

#[test]
fn connection_close_and_http10() {
    let (r, _, _) = every_split(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(!r.keep_alive);
    let (r, _, _) = every_split(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert!(!r.keep_alive);
    let (r, _, _) = every_split(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(r.keep_alive);
}

/// However the reads fall, even with the final head's start in the same
/// read as an informational head (found by the property test).
#[test]
fn continue_heads_are_skipped() {
    let (r, body, _) = every_split(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        false,
    );
    assert_eq!((r.status, body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn extra_bytes_are_reported_and_end_keep_alive() {
    let (r, _, extra) = read(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK",
        1000,
        false,
    )
    .expect("response");
    assert_eq!((extra, r.keep_alive), (4, false));
}

#[test]
fn broken_responses_are_errors() {
    for wire in [
        &b"NOT HTTP\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ] {
        assert_eq!(
            read(wire, 1000, false).err(),
            Some(ParseError::Malformed),
            "{wire:?}"
        );
    }
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 O",
    ] {
        assert_eq!(
            read(wire, 1000, false).err(),
            Some(ParseError::Incomplete),
            "{wire:?}"
        );
    }
}

#[test]
fn oversized_head_is_refused() {
    let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
    while wire.len() <= MAX_HEAD {
        wire.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    // Too many headers fails first when fed whole; byte by byte the size limit does.
    assert_eq!(read(&wire, 1000, false).err(), Some(ParseError::Malformed));
}

#[test]
fn content_length_must_be_digits() {
    for value in [
        "+5",
        "-5",
        "5x",
        "0x5",
        "5 5",
        "",
        " ",
        "5,",
        ",5",
        "5, 6",
        "5.0",
        "99999999999999999999",
    ] {
        let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\nhello");
        assert_eq!(
            read(wire.as_bytes(), 1000, false).err(),
            Some(ParseError::Malformed),
            "Content-Length: {value:?}"
        );
    }
    // A list of identical values, or the same value repeated, is one length.
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ] {
        let (r, body, _) = every_split(wire, false);
        assert_eq!((r.keep_alive, body.as_slice()), (true, &b"hello"[..]));
    }
}

#[test]
fn transfer_encoding_overrides_content_length_and_ends_keep_alive() {
    let (r, body, _) = every_split(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    );
    assert_eq!((r.keep_alive, body.as_slice()), (false, &b"hello"[..]));
}

#[test]
fn final_coding_other_than_chunked_reads_to_close() {
    // The field lines make one list whose final coding decides, and
    // Content-Length does not apply.
    for wire in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n2\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n2\r\nok",
    ] {
        let (r, body, _) = every_split(wire, false);
        assert_eq!((r.keep_alive, body.as_slice()), (false, &b"2\r\nok"[..]));
    }
    // gzip then chunked: chunked is final, so the body is chunk-framed.
    let (r, body, _) = every_split(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        false,
    );
    assert_eq!((r.keep_alive, body.as_slice()), (true, &b"ok"[..]));
}

#[test]
fn unframeable_transfer_encodings_are_errors() {
    for te in [
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        // Not "the last line wins": chunked was applied before identity.
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5",
        "Transfer-Encoding: ",
        "Transfer-Encoding: ,",
        "Transfer-Encoding: ;x=1",
    ] {
        let wire = format!("HTTP/1.1 200 OK\r\n{te}\r\n\r\n0\r\n\r\n");
        assert_eq!(
            read(wire.as_bytes(), 1000, false).err(),
            Some(ParseError::Malformed),
            "{te:?}"
        );
    }
    // HTTP/1.0 has no Transfer-Encoding: its framing is faulty.
    assert_eq!(
        read(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
            1000,
            false
        )
        .err(),
        Some(ParseError::Malformed)
    );
}

#[test]
fn a_kept_body_stops_at_its_limit() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
    let length = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhelloworld";
    let eof = b"HTTP/1.1 200 OK\r\n\r\nhelloworld";
    for wire in [&chunked[..], length, eof] {
        for step in 1..wire.len() {
            let (_, body, _) = read_limited(wire, step, false, 10).expect("fits exactly");
            assert_eq!(body, b"helloworld");
            assert_eq!(
                read_limited(wire, step, false, 9).err(),
                Some(ParseError::BodyTooLarge),
                "{wire:?} in steps of {step}"
            );
        }
    }
    // A declared length over the limit fails before any body arrives.
    let mut r = ResponseReader::new(false, 9);
    let mut body = Vec::new();
    assert_eq!(
        r.feed(
            &length[..length.len() - 10],
            &mut Vec::new(),
            Some(&mut body)
        ),
        Err(ParseError::BodyTooLarge)
    );
    // A body that is only counted has no limit: it is never kept.
    let mut r = ResponseReader::new(false, 1);
    assert_eq!(
        r.feed(length, &mut Vec::new(), None),
        Ok(Progress::Done { extra: 0 })
    );
    assert_eq!(r.body_bytes, 10);
}

#[test]
fn a_kept_body_never_allocates_past_its_limit() {
    let limit = 100_000;
    let mut body = Vec::new();
    let piece = [b'x'; 4096];
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = keep(&mut body, &piece, limit) {
            err = Some(e);
            break;
        }
        assert!(body.capacity() <= limit, "capacity {}", body.capacity());
    }
    assert_eq!(err, Some(ParseError::BodyTooLarge));
    assert!(body.len() <= limit && body.capacity() <= limit);
}
