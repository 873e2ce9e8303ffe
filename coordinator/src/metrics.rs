//! Prometheus `/metrics` in the OpenMetrics text format, rendered at each scrape from the published
//! live view, the attached workers and the last finished run's thresholds; and the small listener
//! that serves it for one-shot runs (`--metrics-bind`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use squall_common::report::ThresholdResult;
use tokio::sync::watch;

use crate::cluster::MemberView;
use crate::error::CoordinatorError;
use crate::report::LiveView;
use crate::report::live::DURATION_BUCKETS_S;
use crate::serve::auth;

/// The OpenMetrics content type, for scrapers that ask for it (Prometheus does).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, for everything else (curl, `promtool check metrics`).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The thresholds of the last finished run, by scenario: only known once its report is built.
pub type Verdicts = Arc<Mutex<Option<(String, Vec<ThresholdResult>)>>>;

/// Everything a scrape reads; cheap to clone.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    pub live: watch::Receiver<Option<Arc<LiveView>>>,
    /// The attached workers (serve mode); a one-shot run counts its run's workers instead.
    pub members: Option<watch::Receiver<Vec<MemberView>>>,
    pub verdicts: Verdicts,
}

/// One scrape's worth of data, taken once so the families agree with each other.
#[derive(Debug)]
struct Scrape {
    live: Option<Arc<LiveView>>,
    members: Option<Vec<MemberView>>,
    verdicts: Option<(String, Vec<ThresholdResult>)>,
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(v) = &self.live {
            let sc = v.scenario.as_str();
            let mut m = enc.encode_descriptor(
                "squall_requests",
                "Requests completed, by endpoint, method and HTTP status (0: no response).",
                None,
                MetricType::Counter,
            )?;
            for e in &v.endpoints {
                let mut answered = 0u64;
                for (code, n) in &e.status {
                    answered = answered.saturating_add(*n);
                    let code = code.to_string();
                    let labels = [
                        ("scenario", sc),
                        ("endpoint", e.name.as_str()),
                        ("method", e.method.as_str()),
                        ("status", code.as_str()),
                    ];
                    ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
                }
                // Requests without a response (connect errors, timeouts) still count.
                let none = e.requests.saturating_sub(answered);
                if none > 0 || e.status.is_empty() {
                    let labels = [
                        ("scenario", sc),
                        ("endpoint", e.name.as_str()),
                        ("method", e.method.as_str()),
                        ("status", "0"),
                    ];
                    ConstCounter::new(none).encode(m.encode_family(&labels)?)?;
                }
            }
            let mut m = enc.encode_descriptor(
                "squall_request_failures",
                "Failed requests, by endpoint and error kind.",
                None,
                MetricType::Counter,
            )?;
            for e in &v.endpoints {
                for (kind, n) in &e.errors {
                    let labels = [
                        ("scenario", sc),
                        ("endpoint", e.name.as_str()),
                        ("kind", kind.as_str()),
                    ];
                    ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
                }
            }
            let mut m = enc.encode_descriptor(
                "squall_request_duration_seconds",
                "Request latency (to the last byte; from the intended start in open models), from the merged HDR histograms.",
                None,
                MetricType::Histogram,
            )?;
            for e in &v.endpoints {
                let labels = [
                    ("scenario", sc),
                    ("endpoint", e.name.as_str()),
                    ("method", e.method.as_str()),
                ];
                let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_S
                    .iter()
                    .copied()
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(e.duration_buckets.iter().copied())
                    .collect();
                let count = buckets.iter().map(|(_, n)| n).sum();
                let mut fam = m.encode_family(&labels)?;
                fam.encode_histogram::<[(&str, &str); 0]>(e.duration_sum_s, count, &buckets, None)?;
            }
            let mut m = enc.encode_descriptor(
                "squall_active_users",
                "Active virtual users, by user class.",
                None,
                MetricType::Gauge,
            )?;
            let done = v.phase == crate::report::Phase::Done;
            for c in &v.classes {
                let labels = [("scenario", sc), ("class", c.name.as_str())];
                let users = if done { 0 } else { c.users };
                ConstGauge::new(users).encode(m.encode_family(&labels)?)?;
            }
            let mut m = enc.encode_descriptor(
                "squall_run_info",
                "The current (or last) run: 1 for its id, scenario and phase.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [
                ("run_id", v.run_id.as_str()),
                ("scenario", sc),
                ("phase", phase_name(v)),
            ];
            ConstGauge::new(1u64).encode(m.encode_family(&labels)?)?;
        }
        let mut states: std::collections::BTreeMap<&str, u64> = [
            "ready", "spawning", "running", "stopping", "stopped", "failed", "lost",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        match (&self.members, &self.live) {
            (Some(members), _) => {
                for w in members {
                    *states.entry(w.state).or_default() += 1;
                }
            }
            (None, Some(v)) => {
                for w in &v.workers {
                    let s = if w.lost { "lost" } else { w.state.as_str() };
                    if let Some(n) = states.get_mut(s) {
                        *n += 1;
                    }
                }
            }
            (None, None) => {}
        }
        let mut m = enc.encode_descriptor(
            "squall_workers",
            "Workers by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in &states {
            ConstGauge::new(*n).encode(m.encode_family(&[("state", *state)])?)?;
        }
        if let Some((scenario, results)) = &self.verdicts {
            let mut m = enc.encode_descriptor(
                "squall_threshold_passed",
                "Thresholds of the last finished run: 1 passed, 0 failed.",
                None,
                MetricType::Gauge,
            )?;
            for t in results {
                let labels = [
                    ("scenario", scenario.as_str()),
                    ("threshold", t.expr.as_str()),
                ];
                ConstGauge::new(u64::from(t.passed)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn phase_name(v: &LiveView) -> &'static str {
    match v.phase {
        crate::report::Phase::Starting => "starting",
        crate::report::Phase::Running => "running",
        crate::report::Phase::Stopping => "stopping",
        crate::report::Phase::Done => "done",
    }
}

/// The OpenMetrics text of one scrape.
pub fn render(src: &MetricsSource) -> String {
    let scrape = Scrape {
        live: src.live.borrow().clone(),
        members: src.members.as_ref().map(|m| m.borrow().clone()),
        verdicts: src.verdicts.lock().map(|v| v.clone()).unwrap_or_default(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// The OpenMetrics text in the classic Prometheus format: a counter's HELP and
/// TYPE lines name its `_total` sample, and there is no `# EOF`.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The `/metrics` response: OpenMetrics when the scraper accepts it, the classic text format otherwise.
pub fn response(src: &MetricsSource, headers: &HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = render(src);
    if openmetrics {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            text,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_TEXT),
            )],
            classic(&text),
        )
            .into_response()
    }
}

/// Serves `/metrics` alone on `addr` for a one-shot run (`--metrics-bind`);
/// with a token, scrapes must send it as a bearer token.
pub async fn serve(
    addr: SocketAddr,
    token: Option<String>,
    src: MetricsSource,
) -> Result<SocketAddr, CoordinatorError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CoordinatorError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| CoordinatorError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let token = Arc::new(token);
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let src = src.clone();
            let token = token.clone();
            async move {
                if !auth::allowed(token.as_deref(), &headers) {
                    return auth::unauthorized();
                }
                response(&src, &headers)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics listener stopped: {e}");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counter_samples() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 5\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = classic(om);
        assert_eq!(
            text,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 5\n# HELP g Gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
