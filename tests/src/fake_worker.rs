//! A fake worker: a real gRPC client speaking the real protocol to a real coordinator, sending whatever a test tells it to (hostile messages included), and reading as much as the test says.

use std::time::Duration;

use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Hello, PROTOCOL_VERSION, Start, WorkerMessage, WorkerState,
};
use squall_proto::{CoordinatorClient, decode_coordinator_message, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// The HTTP/2 stream window of a fake that stops reading: small, so that it
/// backs the coordinator up after a few messages.
const SMALL_STREAM_WINDOW: u32 = 4096;

/// How much of what the coordinator sends the fake reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Everything, so it never holds the stream up.
    Always,
    /// Up to its Start, then nothing more: a worker that stopped reading.
    UntilStart,
}

/// An attached fake worker. It reads what the coordinator sends as its
/// [`Reading`] says and heartbeats every second until dropped.
pub struct FakeWorker {
    tx: mpsc::Sender<pb::WorkerMessage>,
    inbox: mpsc::UnboundedReceiver<CoordinatorMessage>,
    heartbeat: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl FakeWorker {
    /// Dials `master` (`host:port`), says Hello as `id` and reads everything from then on.
    pub async fn attach(master: &str, id: &str) -> FakeWorker {
        FakeWorker::attach_with(master, id, Reading::Always).await
    }

    /// Dials `master` (`host:port`), says Hello as `id` and reads as `reading` says.
    pub async fn attach_with(master: &str, id: &str, reading: Reading) -> FakeWorker {
        let mut endpoint = Endpoint::from_shared(format!("http://{master}"))
            .expect("coordinator address")
            .connect_timeout(Duration::from_secs(5));
        if reading == Reading::UntilStart {
            endpoint = endpoint.initial_stream_window_size(SMALL_STREAM_WINDOW);
        }
        let channel = endpoint
            .connect()
            .await
            .unwrap_or_else(|e| panic!("fake worker {id}: cannot dial {master}: {e}"));
        let client = CoordinatorClient::new(channel);
        let mut client = client
            .max_decoding_message_size(squall_proto::link::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(squall_proto::link::MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(64);
        let hello = WorkerMessage::Hello(Hello {
            worker_id: id.to_owned(),
            version: "fake".into(),
            protocol_version: PROTOCOL_VERSION,
            cores: 1,
            labels: Default::default(),
        });
        tx.send(wire(&hello)).await.expect("queue hello");
        let mut inbound = tokio::time::timeout(
            Duration::from_secs(10),
            client.attach(tonic::Request::new(ReceiverStream::new(rx))),
        )
        .await
        .unwrap_or_else(|_| panic!("fake worker {id}: no answer to attach within 10 s"))
        .unwrap_or_else(|e| panic!("fake worker {id}: attach refused: {e}"))
        .into_inner();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let Ok(m) = decode_coordinator_message(m) else {
                    continue;
                };
                let was_start = matches!(m, CoordinatorMessage::Start(_));
                if inbox_tx.send(m).is_err() {
                    return;
                }
                if was_start && reading == Reading::UntilStart {
                    // Keep the stream open, never read it again.
                    std::future::pending::<()>().await;
                }
            }
        });
        let beats = tx.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let beat = WorkerMessage::Heartbeat(Heartbeat {
                    state: WorkerState::Running,
                    active_users: 0,
                    cpu_percent: 0.0,
                });
                if beats.send(wire(&beat)).await.is_err() {
                    return;
                }
            }
        });
        FakeWorker {
            tx,
            inbox,
            heartbeat,
            reader,
        }
    }

    /// Sends one message as this worker.
    pub async fn send(&self, msg: &WorkerMessage) {
        self.tx
            .send(wire(msg))
            .await
            .expect("fake worker stream open");
    }

    /// The first coordinator message within `timeout` for which `pick` returns `Some`; others are skipped.
    pub async fn expect<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(CoordinatorMessage) -> Option<T>,
    ) -> T {
        let wait = async {
            while let Some(m) = self.inbox.recv().await {
                if let Some(t) = pick(m) {
                    return Some(t);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(t)) => t,
            Ok(None) => panic!("the coordinator closed the stream before {what}"),
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }

    /// The first message the coordinator sent this worker, whatever it is.
    pub async fn first(&mut self, timeout: Duration) -> CoordinatorMessage {
        self.expect(timeout, "a first message", Some).await
    }

    /// Waits for this worker's Start.
    pub async fn start(&mut self, timeout: Duration) -> Start {
        self.expect(timeout, "Start", |m| match m {
            CoordinatorMessage::Start(s) => Some(*s),
            _ => None,
        })
        .await
    }

    /// Waits for an Ack covering every seq below `seq`.
    pub async fn acked(&mut self, seq: u64, timeout: Duration) {
        self.expect(timeout, &format!("Ack of seq {seq}"), |m| match m {
            CoordinatorMessage::Ack { seq: s, .. } if s >= seq => Some(()),
            _ => None,
        })
        .await;
    }
}

impl FakeWorker {
    /// Sends empty snapshots of `run_id` with new sequence numbers as fast
    /// as the coordinator takes them, until it has sent `limit` or the
    /// stream is gone. Returns how many it sent.
    pub async fn flood(&self, run_id: &str, limit: u64) -> u64 {
        for seq in 0..limit {
            let m = pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Snapshot(pb::Snapshot {
                    run_id: run_id.to_owned(),
                    seq,
                    ..Default::default()
                })),
            };
            if self.tx.send(m).await.is_err() {
                return seq;
            }
        }
        limit
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.reader.abort();
    }
}

fn wire(m: &WorkerMessage) -> pb::WorkerMessage {
    pb::WorkerMessage::try_from(m).expect("a worker message encodes")
}
