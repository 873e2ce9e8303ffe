//! TLS for the worker's link to the coordinator: load the CA and client certificate once, up front, connect so that a refused certificate is seen as such, and explain handshake failures.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use squall_proto::link::{
    ALPN_H2, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, certificates, find_rustls_error, private_key,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use crate::error::WorkerError;

/// How long the TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the TLS handshake, and the coordinator's verdict on this worker's certificate, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Validated TLS settings for dialling the coordinator.
///
/// Files are read and checked when the worker starts, so a missing file, a
/// PEM without a certificate or a key that does not match its certificate is
/// reported (exit 2) before any connection is made.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    ca_path: PathBuf,
    has_identity: bool,
    domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_path)
            .field("client_cert", &self.has_identity)
            .field("domain", &self.domain)
            .finish()
    }
}

fn file_error(path: &Path, reason: impl Into<String>) -> WorkerError {
    WorkerError::TlsFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Host, port and the name to verify, for one `https://host:port`.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    name: ServerName<'static>,
}

impl ClientTls {
    /// Reads and checks the CA (`--tls-ca`), the optional client certificate
    /// and key (`--tls-cert`, `--tls-key`) and the optional name to verify
    /// (`--tls-domain`).
    pub fn load(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        domain: Option<String>,
    ) -> Result<ClientTls, WorkerError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca)? {
            roots
                .add(cert)
                .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| WorkerError::Usage(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_path, key_path)) => {
                let chain = certificates(cert_path)?;
                let key = private_key(key_path)?;
                // This checks that the key is usable and matches the certificate.
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    file_error(
                        key_path,
                        format!(
                            "cannot be used with the certificate in {}: {e}",
                            cert_path.display()
                        ),
                    )
                })?
            }
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        if let Some(d) = &domain {
            ServerName::try_from(d.as_str()).map_err(|_| {
                WorkerError::Usage(format!(
                    "--tls-domain `{d}` is not a DNS name or IP address"
                ))
            })?;
        }
        Ok(ClientTls {
            config: Arc::new(config),
            ca_path: ca.to_owned(),
            has_identity: identity.is_some(),
            domain,
        })
    }

    /// Whether this worker presents a client certificate.
    pub fn has_identity(&self) -> bool {
        self.has_identity
    }

    fn target(&self, url: &str) -> Result<Target, WorkerError> {
        let bad = |why: &str| WorkerError::Usage(format!("cannot dial {url} over TLS: {why}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
        let name = self.domain.clone().unwrap_or_else(|| host.clone());
        let name = ServerName::try_from(name.clone()).map_err(|_| {
            bad(&format!(
                "`{name}` is not a DNS name or IP address to verify; set --tls-domain NAME"
            ))
        })?;
        Ok(Target { host, port, name })
    }

    /// Checks once, at start-up, that `url` can be dialled with these settings.
    pub fn check(&self, url: &str) -> Result<(), WorkerError> {
        self.target(url).map(|_| ())
    }

    /// Opens a gRPC channel to `url` (`https://host:port`) over TLS.
    ///
    /// The TLS layer is ours rather than tonic's so that the connection is
    /// returned only once the coordinator has accepted this worker (see
    /// [`handshake`]); tonic then speaks plain HTTP/2 over it.
    pub fn dial(
        &self,
        url: &str,
    ) -> Result<impl Future<Output = Result<Channel, tonic::transport::Error>> + use<>, WorkerError>
    {
        let target = self.target(url)?;
        let inner_url = format!("http://{}", url.trim_start_matches("https://"));
        let endpoint = Endpoint::from_shared(inner_url)
            .map_err(|e| WorkerError::Usage(format!("cannot dial {url}: {e}")))?
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let config = self.config.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let (config, target) = (config.clone(), target.clone());
            async move { handshake(config, target).await.map(TokioIo::new) }
        });
        Ok(async move { endpoint.connect_with_connector(connector).await })
    }

    /// What a failed TLS handshake means and how to fix it, or `None` if
    /// `err` is not a TLS failure (then it is a network problem worth a retry).
    ///
    /// Any rustls error counts: each one is a certificate, name or protocol
    /// mismatch that retrying cannot fix.
    pub fn explain(&self, err: &(dyn std::error::Error + 'static)) -> Option<String> {
        let e = find_rustls_error(err)?;
        Some(format!("{e}; {}", self.hint(e)))
    }

    fn hint(&self, e: &rustls::Error) -> String {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let ca = self.ca_path.display();
        match e {
            E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
                "the coordinator's certificate is not signed by the CA in --tls-ca {ca}"
            ),
            E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                "the coordinator's certificate does not name the host in --master: dial a name or address it lists, or set --tls-domain NAME".to_owned()
            }
            E::InvalidCertificate(
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            ) => "check the certificate's validity dates and both machines' clocks".to_owned(),
            E::AlertReceived(A::CertificateRequired) => {
                "the coordinator requires a client certificate (mTLS): pass --tls-cert FILE --tls-key FILE".to_owned()
            }
            E::AlertReceived(
                A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied,
            ) if self.has_identity => {
                "the coordinator rejected this worker's certificate: it must be signed by the CA given to the coordinator's --tls-client-ca".to_owned()
            }
            E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => {
                "the coordinator rejected the connection; if it requires client certificates (mTLS), pass --tls-cert FILE --tls-key FILE".to_owned()
            }
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. } => {
                "the coordinator does not seem to speak TLS; if it runs without --tls-cert, dial it with --master HOST:PORT and no --tls-ca".to_owned()
            }
            _ => "check that --tls-ca, --tls-cert and --tls-key match the coordinator's --tls-cert and --tls-client-ca".to_owned(),
        }
    }
}

/// Connects, completes the TLS handshake and waits for the coordinator's first bytes.
///
/// In TLS 1.3 the server judges a client certificate only after the client
/// has finished its side of the handshake, so a refusal (no certificate,
/// wrong CA) arrives as an alert on the first read, and by then an HTTP/2
/// client may already have failed with a bare "broken pipe". The
/// coordinator's HTTP/2 server speaks first (its SETTINGS frame), so one read
/// here tells acceptance from refusal, with the rustls error intact; the bytes
/// read are replayed to HTTP/2 by [`Primed`].
async fn handshake(config: Arc<rustls::ClientConfig>, target: Target) -> io::Result<Primed> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TCP connection within {CONNECT_TIMEOUT:?}"),
        )
    })??;
    tcp.set_nodelay(true)?;
    let secured = async {
        let mut tls = TlsConnector::from(config).connect(target.name, tcp).await?;
        let mut head = vec![0; 16 * 1024];
        let n = tls.read(&mut head).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the coordinator closed the connection right after the TLS handshake",
            ));
        }
        head.truncate(n);
        Ok(Primed {
            head,
            pos: 0,
            inner: tls,
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, secured)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            )
        })?
}

/// A TLS stream whose first bytes were read early by [`handshake`] and are returned first.
struct Primed {
    head: Vec<u8>,
    pos: usize,
    inner: TlsStream<TcpStream>,
}

impl AsyncRead for Primed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.pos);
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Primed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_path() {
        let dir = std::env::temp_dir().join(format!("squall-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let err = ClientTls::load(&missing, None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = ClientTls::load(&empty, None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
