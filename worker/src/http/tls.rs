//! TLS to an `https://` target: the rustls client set up once per run (Mozilla's
//! roots plus the scenario's CA, or no checks when asked), and the handshake.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, DigitallySignedStruct, SignatureScheme};

use squall_common::scenario::TargetTls;

use crate::error::WorkerError;

/// A ready connector and the name every connection verifies.
#[derive(Clone)]
pub struct TargetTlsConnector {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TargetTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTlsConnector")
            .field("name", &self.name)
            .finish()
    }
}

impl TargetTlsConnector {
    /// Builds the client for `host` (the URL's host name) once per run.
    pub fn new(settings: &TargetTls, host: &str) -> Result<Self, WorkerError> {
        // Each user holds one HTTP/1.1 connection.
        Self::offering(settings, host, b"http/1.1")
    }

    /// The same client offering only `protocol` by ALPN (`h2` for HTTP/2).
    pub fn offering(
        settings: &TargetTls,
        host: &str,
        protocol: &[u8],
    ) -> Result<Self, WorkerError> {
        let bad = |what: String| WorkerError::Scenario(format!("tls: {what}"));
        let provider = Arc::new(ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?;
        let mut config = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(pem) = &settings.ca_pem {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| bad(format!("ca: not valid PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| bad(format!("ca: not a usable CA certificate: {e}")))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![protocol.to_vec()];
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| bad(format!("`{host}` is not a name to verify: {e}")))?;
        Ok(TargetTlsConnector {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// `tls: { insecure: true }`: any certificate is accepted, signatures are
/// still checked so the handshake itself stays sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
