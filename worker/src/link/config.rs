//! The worker's validated settings: which coordinator to dial and how, its identity, and its engine threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tls::ClientTls;
use crate::engine::Realtime;
use crate::error::WorkerError;

/// A validated worker configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` or, with `tls`, `https://host:port` of the coordinator.
    pub master: String,
    /// TLS towards the coordinator; `None` dials in plaintext (loopback, trusted networks).
    pub tls: Option<ClientTls>,
    pub token: Option<String>,
    pub id: String,
    /// Engine threads (one current-thread runtime each).
    pub threads: usize,
    /// SCHED_FIFO for the engine threads, checked (`Realtime::new`).
    pub realtime: Option<Realtime>,
    pub labels: BTreeMap<String, String>,
    pub samples_file: Option<PathBuf>,
    /// Stop retrying after this long without reaching a coordinator; `None` retries forever.
    pub give_up_after: Option<Duration>,
    /// React to SIGINT/SIGTERM (stop the load, say goodbye, exit). Off for
    /// in-process workers, whose coordinator handles the signal.
    pub handle_signals: bool,
}

impl AgentConfig {
    /// Normalises `host:port`, `http://host:port` or `https://host:port` into a URL tonic can dial.
    ///
    /// `tls` says whether TLS settings (`--tls-ca`) were given: `host:port`
    /// then means `https://`, and a scheme that contradicts them is refused
    /// rather than silently dialling in plaintext or without a CA.
    pub fn master_url(master: &str, tls: bool) -> Result<String, WorkerError> {
        let url = match master.split_once("://") {
            None if tls => format!("https://{master}"),
            None => format!("http://{master}"),
            Some(("http", _)) if tls => {
                return Err(WorkerError::Usage(format!(
                    "--master {master} is plaintext (http://) but --tls-ca was given: use https://HOST:PORT or HOST:PORT"
                )));
            }
            Some(("https", _)) if !tls => {
                return Err(WorkerError::Usage(format!(
                    "--master {master} asks for TLS: pass --tls-ca FILE, the CA that signed the coordinator's certificate"
                )));
            }
            Some(("http" | "https", _)) => master.to_owned(),
            Some(_) => return Err(WorkerError::MasterAddress(master.to_owned())),
        };
        let parsed: http::Uri = url
            .parse()
            .map_err(|_| WorkerError::MasterAddress(master.to_owned()))?;
        if parsed.host().is_none() || parsed.port_u16().is_none() {
            return Err(WorkerError::MasterAddress(master.to_owned()));
        }
        Ok(url)
    }

    /// Reads and checks the TLS files for dialling the coordinator: the CA
    /// (`--tls-ca`), an optional client certificate and key for mTLS
    /// (`--tls-cert`, `--tls-key`) and an optional name to verify (`--tls-domain`).
    pub fn load_tls(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        domain: Option<String>,
    ) -> Result<ClientTls, WorkerError> {
        ClientTls::load(ca, identity, domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        assert_eq!(
            AgentConfig::master_url("127.0.0.1:5557", false)
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:5557")
        );
        assert!(AgentConfig::master_url("nohost", false).is_err());
        assert!(AgentConfig::master_url("http://h", false).is_err());
    }

    #[test]
    fn tls_master_addresses() {
        assert_eq!(
            AgentConfig::master_url("coord:5557", true).ok().as_deref(),
            Some("https://coord:5557")
        );
        assert_eq!(
            AgentConfig::master_url("https://coord:5557", true)
                .ok()
                .as_deref(),
            Some("https://coord:5557")
        );
        // A scheme that contradicts the TLS settings is refused, never silently downgraded.
        assert!(AgentConfig::master_url("http://coord:5557", true).is_err());
        assert!(AgentConfig::master_url("https://coord:5557", false).is_err());
        assert!(AgentConfig::master_url("ftp://coord:5557", false).is_err());
    }
}
