//! A fake worker: a real gRPC client speaking the real protocol, for tests of workers that misbehave.

use std::time::Duration;

use squall_common::protocol::{CoordinatorMessage, Hello, PROTOCOL_VERSION, WorkerMessage};
use squall_proto::{CoordinatorClient, decode_coordinator_message, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

/// The HTTP/2 stream window the fake advertises: small, so that a fake
/// that stops reading backs the coordinator up after a few messages.
const STREAM_WINDOW: u32 = 4096;

/// An attached fake worker: what it sends goes on `tx`, what the coordinator
/// says arrives on `inbound`, read only when the test asks.
pub struct FakeWorker {
    pub tx: mpsc::Sender<pb::WorkerMessage>,
    inbound: Streaming<pb::CoordinatorMessage>,
}

impl FakeWorker {
    /// Dials `master` (`host:port`), sends Hello as `id` and opens the `Attach` stream.
    pub async fn attach(master: &str, id: &str) -> FakeWorker {
        let channel = Endpoint::from_shared(format!("http://{master}"))
            .expect("coordinator address")
            .initial_stream_window_size(STREAM_WINDOW)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the coordinator");
        let mut client = CoordinatorClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        let hello = WorkerMessage::Hello(Hello {
            worker_id: id.to_owned(),
            version: "fake".into(),
            protocol_version: PROTOCOL_VERSION,
            cores: 1,
            labels: Default::default(),
        });
        tx.send(pb::WorkerMessage::try_from(&hello).expect("encode Hello"))
            .await
            .expect("queue Hello");
        let inbound = tokio::time::timeout(
            Duration::from_secs(10),
            client.attach(tonic::Request::new(ReceiverStream::new(rx))),
        )
        .await
        .expect("attach within 10 s")
        .expect("attach accepted")
        .into_inner();
        FakeWorker { tx, inbound }
    }

    /// Reads until the coordinator sends Start, and returns its run id.
    pub async fn run_id(&mut self, timeout: Duration) -> String {
        let read = async {
            loop {
                let m = self
                    .inbound
                    .message()
                    .await
                    .expect("stream from the coordinator")
                    .expect("the coordinator closed the stream before Start");
                if let Ok(CoordinatorMessage::Start(s)) = decode_coordinator_message(m) {
                    return s.run_id;
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .expect("a Start from the coordinator")
    }

    /// Sends empty snapshots of `run_id` with new sequence numbers as fast
    /// as the coordinator takes them, reading nothing, until it has sent
    /// `limit` or the stream is gone. Returns how many it sent.
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
