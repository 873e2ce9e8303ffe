//! `coordinator probe URL`: the health check of a container image that has no shell, curl or wget.
//!
//! A container healthcheck (`docker-compose.yml`, a Kubernetes exec probe)
//! must run a program inside the image, and the image holds only the two
//! Squall binaries. So the coordinator carries the one check its deployments
//! need: can this address be reached (`tcp://HOST:PORT`, the coordinator's
//! worker port), and does this URL answer 2xx (`http://HOST:PORT/PATH`, the
//! demo target). Names are resolved exactly as the workers resolve them, so
//! a probe of `http://target:8080/...` run in a worker container also proves
//! that service names resolve there.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CoordinatorError;

/// How much of a response body is read and printed; a probe reads health
/// and stats pages, never downloads.
const MAX_BODY: u64 = 64 * 1024;

/// What to probe, checked before anything is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// Connect, then close.
    Tcp { authority: String },
    /// `GET path` over HTTP/1.1 (`Connection: close`); 2xx passes.
    Http { authority: String, path: String },
}

impl ProbeTarget {
    /// Parses `tcp://HOST:PORT` or `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<ProbeTarget, CoordinatorError> {
        let usage = |why: &str| {
            CoordinatorError::Usage(format!(
                "probe {url:?}: {why}; expected tcp://HOST:PORT or http://HOST[:PORT][/PATH]"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| usage("no scheme"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(usage("no host"));
        }
        if authority.contains('@') || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(usage(
                "user info, spaces and control characters are not allowed",
            ));
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        match scheme {
            "tcp" if has_port => Ok(ProbeTarget::Tcp {
                authority: authority.to_owned(),
            }),
            "tcp" => Err(usage("a tcp:// probe needs a port")),
            "http" => Ok(ProbeTarget::Http {
                authority: if has_port {
                    authority.to_owned()
                } else {
                    format!("{authority}:80")
                },
                path: path.to_owned(),
            }),
            _ => Err(usage(&format!("unsupported scheme {scheme}"))),
        }
    }
}

/// Runs the probe within `timeout`; prints a 2xx body on stdout.
pub async fn probe(target: &ProbeTarget, timeout: Duration) -> Result<(), CoordinatorError> {
    let failed = |why: String| CoordinatorError::Probe(why);
    match tokio::time::timeout(timeout, attempt(target)).await {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(format!("no answer within {timeout:?}"))),
    }
}

async fn attempt(target: &ProbeTarget) -> Result<(), String> {
    match target {
        ProbeTarget::Tcp { authority } => {
            connect(authority).await?;
            Ok(())
        }
        ProbeTarget::Http { authority, path } => {
            let mut stream = connect(authority).await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: squall-probe\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("{authority}: cannot send: {e}"))?;
            let mut response = Vec::new();
            stream
                .take(MAX_BODY + 16 * 1024)
                .read_to_end(&mut response)
                .await
                .map_err(|e| format!("{authority}: cannot read the response: {e}"))?;
            let (status, body) = split_response(&response)
                .ok_or_else(|| format!("{authority}: not an HTTP response"))?;
            if !(200..300).contains(&status) {
                return Err(format!("GET {path} on {authority}: status {status}"));
            }
            println!("{}", String::from_utf8_lossy(body).trim_end());
            Ok(())
        }
    }
}

async fn connect(authority: &str) -> Result<TcpStream, String> {
    let addrs: Vec<_> = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last = format!("{authority} resolved to no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("cannot connect to {authority} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// The status code and the body (whatever follows the head) of a response
/// read to EOF; the probe never needs chunked decoding to judge health.
fn split_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = response.split(|&b| b == b'\n').next()?;
    let status_line = std::str::from_utf8(status_line).ok()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, &response[head_end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_what_is_dialled() {
        assert_eq!(
            ProbeTarget::parse("tcp://coordinator:5557").ok(),
            Some(ProbeTarget::Tcp {
                authority: "coordinator:5557".into()
            })
        );
        assert_eq!(
            ProbeTarget::parse("http://target:8080/__squall/stats").ok(),
            Some(ProbeTarget::Http {
                authority: "target:8080".into(),
                path: "/__squall/stats".into()
            })
        );
        assert_eq!(
            ProbeTarget::parse("http://[::1]").ok(),
            Some(ProbeTarget::Http {
                authority: "[::1]:80".into(),
                path: "/".into()
            })
        );
        for bad in [
            "coordinator:5557",
            "tcp://coordinator",
            "tcp://[::1]",
            "https://x/",
            "http:///x",
            "http://a@b/",
            "http://x/a b",
        ] {
            assert!(ProbeTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn responses_split_into_status_and_body() {
        assert_eq!(
            split_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Some((200, &b"ok"[..]))
        );
        assert_eq!(
            split_response(b"HTTP/1.0 503 Busy\r\n\r\n"),
            Some((503, &b""[..]))
        );
        assert_eq!(split_response(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(split_response(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[tokio::test]
    async fn a_closed_port_fails_within_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let target = ProbeTarget::parse(&format!("tcp://{addr}")).expect("parse");
        let err = probe(&target, Duration::from_secs(2))
            .await
            .expect_err("closed port");
        assert!(matches!(err, CoordinatorError::Probe(_)), "{err}");
    }
}
