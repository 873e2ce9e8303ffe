//! How requests reach the target: HTTP/2 (`defaults.http2`) and a new connection per request (`connection: close`).

use serde::{Deserialize, Serialize};

/// The most HTTP/2 connections one worker may hold to the target: each is a
/// socket and a driver task, and a typo should not open a million.
pub const MAX_H2_CONNECTIONS: u32 = 1_000;
/// The most concurrent streams a worker opens on one HTTP/2 connection; servers
/// advertise 100 to 256 (nginx 128), so this is far past any real need.
pub const MAX_H2_STREAMS: u32 = 10_000;
/// Streams per connection when `max_streams` is absent: what most servers allow.
pub const DEFAULT_H2_STREAMS: u32 = 100;

/// `connection:` on a request, a user class or `defaults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionDef {
    /// Reuse the user's connection (the default).
    #[serde(alias = "keep_alive")]
    KeepAlive,
    /// A new connection (TCP and TLS handshakes) for every request, sent with
    /// `Connection: close` and closed after the response.
    Close,
}

/// `defaults.http2: { connections: 4, max_streams: 100, prior_knowledge: true }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Def {
    /// Connections per worker (1 when absent).
    #[serde(default)]
    pub connections: Option<u32>,
    /// Concurrent streams per connection (100 when absent).
    #[serde(default)]
    pub max_streams: Option<u32>,
    /// `http://` hosts: speak HTTP/2 from the first byte (h2c), with no upgrade.
    #[serde(default)]
    pub prior_knowledge: Option<bool>,
}

/// HTTP/2 as a worker runs it: every user's requests multiplexed over
/// `connections` connections per worker, at most `max_streams` at once on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Spec {
    pub connections: u32,
    pub max_streams: u32,
    /// h2c with prior knowledge (an `http://` host); otherwise h2 by ALPN over TLS.
    pub prior_knowledge: bool,
}

/// Why an `http2:` block cannot run: the key at fault and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Http2Error {
    pub key: &'static str,
    pub message: String,
}

impl Http2Def {
    /// Checks the block against the resolved host (`https` or not).
    pub fn resolve(&self, https: bool) -> Result<Http2Spec, Http2Error> {
        let bad = |key, message: String| Err(Http2Error { key, message });
        let connections = self.connections.unwrap_or(1);
        if !(1..=MAX_H2_CONNECTIONS).contains(&connections) {
            return bad(
                "connections",
                format!("{connections} is not between 1 and {MAX_H2_CONNECTIONS}"),
            );
        }
        let max_streams = self.max_streams.unwrap_or(DEFAULT_H2_STREAMS);
        if !(1..=MAX_H2_STREAMS).contains(&max_streams) {
            return bad(
                "max_streams",
                format!("{max_streams} is not between 1 and {MAX_H2_STREAMS}"),
            );
        }
        let prior_knowledge = self.prior_knowledge.unwrap_or(false);
        if https && prior_knowledge {
            return bad(
                "prior_knowledge",
                "applies to `http://` hosts; an `https://` host negotiates h2 by ALPN".into(),
            );
        }
        if !https && !prior_knowledge {
            return bad(
                "prior_knowledge",
                "an `http://` host needs `prior_knowledge: true` (the HTTP/1.1 Upgrade to h2c is not supported)".into(),
            );
        }
        Ok(Http2Spec {
            connections,
            max_streams,
            prior_knowledge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Loaded;

    /// A request's own `connection:` wins over its class's, which wins over `defaults`.
    #[test]
    fn connection_close_is_inherited_from_the_class_and_defaults() {
        let yaml = "host: http://127.0.0.1:1\ndefaults: { connection: close }\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  a:\n    tasks: [ { get: /a }, { get: /b, connection: keep-alive } ]\n  b:\n    connection: keep-alive\n    on_start: [ { get: /c } ]\n    tasks: [ { get: /d }, { get: /e, connection: close } ]\n";
        let spec = Loaded::from_str("t.yaml", yaml)
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid");
        let close: Vec<(String, Option<bool>)> = spec
            .classes
            .iter()
            .flat_map(|c| c.requests())
            .map(|r| (r.path.clone(), r.close))
            .collect();
        let expect = [
            ("/a", true),
            ("/b", false),
            ("/c", false),
            ("/d", false),
            ("/e", true),
        ];
        assert_eq!(close, expect.map(|(p, c)| (p.to_owned(), Some(c))).to_vec());
        assert_eq!(spec.http2, None);
    }

    #[test]
    fn http2_blocks_are_checked_against_the_host() {
        let def = |c, s, p| Http2Def {
            connections: c,
            max_streams: s,
            prior_knowledge: p,
        };
        assert_eq!(
            def(None, None, None).resolve(true),
            Ok(Http2Spec {
                connections: 1,
                max_streams: 100,
                prior_knowledge: false
            })
        );
        assert!(def(Some(4), Some(8), Some(true)).resolve(false).is_ok());
        let key = |d: Http2Def, https| d.resolve(https).map_err(|e| e.key);
        assert_eq!(key(def(Some(0), None, None), true), Err("connections"));
        assert_eq!(key(def(None, Some(0), None), true), Err("max_streams"));
        assert_eq!(
            key(def(None, Some(MAX_H2_STREAMS + 1), None), true),
            Err("max_streams")
        );
        assert_eq!(
            key(def(None, None, Some(true)), true),
            Err("prior_knowledge")
        );
        assert_eq!(key(def(None, None, None), false), Err("prior_knowledge"));
    }
}
