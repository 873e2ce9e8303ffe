//! The live stream: Server-Sent Events carrying the run's `LiveView` as JSON each time the
//! controller publishes it (once a second), and the attached workers whenever they change.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::watch;

use super::App;
use crate::cluster::MemberView;
use crate::report::LiveView;

/// Which feed changed.
enum Next {
    Live,
    Workers,
}

/// `event: live` (a LiveView or `null`) and `event: workers` (the attached workers), the current
/// values first, then each change; a comment every 15 s keeps proxies from closing the stream.
pub async fn events(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = app.live.clone();
    let members = app.members.clone();
    let first = vec![Next::Live, Next::Workers];
    let stream = futures::stream::unfold(
        (live, members, first),
        |(mut live, mut members, mut queue)| async move {
            if queue.is_empty() {
                let next = tokio::select! {
                    r = live.changed() => r.ok().map(|()| Next::Live),
                    r = members.changed() => r.ok().map(|()| Next::Workers),
                }?;
                queue.push(next);
            }
            let event = match queue.remove(0) {
                Next::Live => live_event(&live),
                Next::Workers => workers_event(&members),
            };
            Some((Ok(event), (live, members, queue)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn live_event(rx: &watch::Receiver<Option<Arc<LiveView>>>) -> Event {
    let v = rx.borrow().clone();
    let json = match v {
        Some(v) => serde_json::to_string(&*v),
        None => Ok("null".to_owned()),
    };
    Event::default()
        .event("live")
        .data(json.unwrap_or_else(|_| "null".to_owned()))
}

fn workers_event(rx: &watch::Receiver<Vec<MemberView>>) -> Event {
    let json = serde_json::to_string(&*rx.borrow()).unwrap_or_else(|_| "[]".to_owned());
    Event::default().event("workers").data(json)
}
