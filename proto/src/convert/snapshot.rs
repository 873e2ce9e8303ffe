//! `Snapshot` on the wire: histograms travel as HDR V2 bytes, untouched in both directions.

use squall_common::snapshot::{EndpointDelta, EndpointKey, Snapshot};

use super::ConvertError;
use crate::pb;

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        pb::Snapshot {
            run_id: s.run_id.clone(),
            seq: s.seq,
            window_start_us: s.window_start_us,
            window_end_us: s.window_end_us,
            active_users: s.active_users,
            open_connections: s.open_connections,
            dropped_iterations: s.dropped_iterations,
            schedule_lag_hdr: s.schedule_lag.clone(),
            generator_lag_hdr: s.generator_lag.clone(),
            endpoints: s
                .endpoints
                .iter()
                .map(|(key, d)| pb::EndpointDelta {
                    name: key.name.clone(),
                    method: key.method.clone(),
                    requests: d.requests,
                    failures: d.failures,
                    status: d.status.iter().map(|(k, v)| (u32::from(*k), *v)).collect(),
                    errors: d.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    checks: d.checks.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    bytes_received: d.bytes_received,
                    latency_hdr: d.latency.clone(),
                    ttfb_hdr: d.ttfb.clone(),
                    service_hdr: d.service.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::Snapshot> for Snapshot {
    type Error = ConvertError;

    fn try_from(s: pb::Snapshot) -> Result<Self, ConvertError> {
        let mut endpoints = Vec::with_capacity(s.endpoints.len());
        for e in s.endpoints {
            let mut status = std::collections::BTreeMap::new();
            for (code, n) in e.status {
                let code = u16::try_from(code)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or(ConvertError::Status(code))?;
                status.insert(code, n);
            }
            endpoints.push((
                EndpointKey {
                    name: e.name,
                    method: e.method,
                },
                EndpointDelta {
                    requests: e.requests,
                    failures: e.failures,
                    status,
                    errors: e.errors.into_iter().collect(),
                    // Names a worker chose: printable and at most
                    // MAX_CHECK_NAMES per endpoint, the rest as "other".
                    checks: e.checks.iter().fold(
                        std::collections::BTreeMap::new(),
                        |mut m, (k, v)| {
                            squall_common::snapshot::add_check(&mut m, k, *v);
                            m
                        },
                    ),
                    bytes_received: e.bytes_received,
                    latency: e.latency_hdr,
                    ttfb: e.ttfb_hdr,
                    service: e.service_hdr,
                },
            ));
        }
        Ok(Snapshot {
            run_id: s.run_id,
            seq: s.seq,
            window_start_us: s.window_start_us,
            window_end_us: s.window_end_us,
            active_users: s.active_users,
            open_connections: s.open_connections,
            dropped_iterations: s.dropped_iterations,
            schedule_lag: s.schedule_lag_hdr,
            generator_lag: s.generator_lag_hdr,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(open_connections: Option<u64>) -> Snapshot {
        Snapshot {
            run_id: "r".into(),
            seq: 3,
            window_start_us: 3_000_000,
            window_end_us: 4_000_000,
            active_users: 7,
            open_connections,
            dropped_iterations: 0,
            schedule_lag: Vec::new(),
            generator_lag: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// A count of 0 (every socket closed) stays distinct from no count at all
    /// (a run without WebSocket or SSE steps) on the wire.
    #[test]
    fn open_connections_survive_the_wire_including_zero_and_absent() {
        for open in [None, Some(0), Some(50_000)] {
            let wire = pb::Snapshot::from(&snapshot(open));
            assert_eq!(wire.open_connections, open);
            let back = Snapshot::try_from(wire).expect("converts");
            assert_eq!(back.open_connections, open);
            assert_eq!(back.active_users, 7);
        }
    }
}
