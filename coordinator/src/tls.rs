//! TLS for the coordinator's worker listener: load the certificate, key and optional client CA up front, and handshake each connection so refusals are logged with their reason.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::CoordinatorError;
use crate::listener::{AUTH_DEADLINE, Acceptor, Guarded};
use squall_proto::link::{ALPN_H2, certificates, find_rustls_error, private_key};

/// The listener's TLS configuration, validated when the coordinator starts.
///
/// Loading builds the complete rustls configuration, so an unreadable file,
/// a PEM without a certificate or a key that does not match the certificate
/// stops the coordinator (exit 2) before it listens.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path, reason: impl Into<String>) -> CoordinatorError {
    CoordinatorError::TlsFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl ServerTls {
    /// Reads `--tls-cert`, `--tls-key` and, for mutual TLS, `--tls-client-ca`.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, CoordinatorError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(cert)?;
        let key_der = private_key(key)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CoordinatorError::Internal(format!("TLS set-up failed: {e}")))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| file_error(ca, format!("not a usable client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
            file_error(
                key,
                format!(
                    "cannot be used with the certificate in {}: {e}",
                    cert.display()
                ),
            )
        })?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            mutual: client_ca.is_some(),
        })
    }

    /// Whether workers must present a certificate signed by `--tls-client-ca`:
    /// then the certificate authenticates them, as a token would.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

/// Accepts connections and completes their TLS handshakes concurrently (one
/// slow peer never blocks the next), yielding the streams that succeed,
/// guarded like plain-text ones. A handshake must finish within the
/// connection's authentication deadline. A failed handshake is logged with
/// the peer and the likely fix.
pub fn incoming(
    mut acceptor: Acceptor,
    tls: &ServerTls,
) -> ReceiverStream<Result<Guarded<TlsStream<TcpStream>>, std::io::Error>> {
    let tls_acceptor = TlsAcceptor::from(tls.config.clone());
    let mutual = tls.mutual;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, ticket) = tokio::select! {
                a = acceptor.accept() => a,
                () = tx.closed() => return,
            };
            let tls_acceptor = tls_acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let peer = ticket.peer();
                match tokio::time::timeout_at(ticket.deadline(), tls_acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(ticket.guard(stream))).await;
                    }
                    Ok(Err(e)) => log_refusal(peer, &e, mutual),
                    Err(_) => tracing::debug!(
                        "dropped a connection from {peer}: no TLS handshake within {AUTH_DEADLINE:?}"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Logs a failed handshake. Failures that carry a TLS error are configuration
/// mismatches an operator must see; bare disconnects (port scans, TCP health
/// checks) are only logged at debug level.
fn log_refusal(peer: SocketAddr, err: &std::io::Error, mutual: bool) {
    match find_rustls_error(err) {
        Some(e) => tracing::warn!(
            "refused a worker connection from {peer}: TLS handshake failed: {e}{}",
            hint(e, mutual)
        ),
        None => tracing::debug!("connection from {peer} closed during the TLS handshake: {err}"),
    }
}

fn hint(e: &rustls::Error, mutual: bool) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::NoCertificatesPresented => {
            " (with --tls-client-ca every worker needs --tls-cert FILE --tls-key FILE)"
        }
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) if mutual => {
            " (the worker's certificate is not signed by --tls-client-ca)"
        }
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => " (check the certificate's validity dates and both machines' clocks)",
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => {
            " (the worker does not trust this coordinator's certificate: give workers --tls-ca with the CA that signed --tls-cert, and a --master name the certificate lists)"
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            " (the worker seems to dial without TLS: give it --tls-ca FILE)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_name_the_path_and_reason() {
        let dir = std::env::temp_dir().join(format!("squall-coord-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "hello\n").expect("write");
        let err = |r: Result<ServerTls, CoordinatorError>| r.err().map(|e| e.to_string());

        let e = err(ServerTls::load(&missing, &garbage, None)).unwrap_or_default();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = err(ServerTls::load(&garbage, &garbage, None)).unwrap_or_default();
        assert!(
            e.contains("garbage.pem") && e.contains("no certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finds_the_rustls_error_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert!(matches!(
            find_rustls_error(&io),
            Some(rustls::Error::NoCertificatesPresented)
        ));
        assert!(hint(&rustls::Error::NoCertificatesPresented, true).contains("--tls-cert"));
    }
}
