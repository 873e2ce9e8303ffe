//! In-process workers: the worker library attached over a real loopback gRPC stream, so local and remote share one code path.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use squall_worker::{AgentConfig, Realtime};

/// Starts `n` local workers dialling `addr`; they exit when the coordinator sends Shutdown.
pub fn spawn(
    n: usize,
    addr: SocketAddr,
    token: Option<String>,
    (threads, realtime): (usize, Option<Realtime>),
) {
    // A wildcard bind is reached through loopback.
    let dial = if addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
    } else {
        addr
    };
    for i in 1..=n {
        let cfg = AgentConfig {
            master: format!("http://{dial}"),
            tls: None,
            token: token.clone(),
            id: format!("local-{i}"),
            threads,
            realtime,
            labels: [("mode".to_owned(), "local".to_owned())].into(),
            samples_file: None,
            give_up_after: Some(Duration::from_secs(10)),
            handle_signals: false,
        };
        tokio::spawn(async move {
            if let Err(e) = squall_worker::run(cfg).await {
                eprintln!("local worker {i}: {e}");
            }
        });
    }
}
