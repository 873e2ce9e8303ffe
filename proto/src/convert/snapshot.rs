//! `Snapshot` on the wire: histograms travel as HDR V2 bytes.

use squall_common::snapshot::{self, EndpointKey, EndpointStats, Snapshot};

use super::ConvertError;
use crate::pb;

impl TryFrom<&Snapshot> for pb::Snapshot {
    type Error = ConvertError;

    fn try_from(s: &Snapshot) -> Result<Self, ConvertError> {
        let mut endpoints = Vec::with_capacity(s.endpoints.len());
        for (key, st) in &s.endpoints {
            endpoints.push(pb::EndpointDelta {
                name: key.name.clone(),
                method: key.method.clone(),
                requests: st.requests,
                failures: st.failures,
                status: st.status.iter().map(|(k, v)| (u32::from(*k), *v)).collect(),
                errors: st.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                bytes_received: st.bytes_received,
                latency_hdr: snapshot::encode_v2(&st.latency)?,
                ttfb_hdr: snapshot::encode_v2(&st.ttfb)?,
                service_hdr: snapshot::encode_v2(&st.service)?,
            });
        }
        Ok(pb::Snapshot {
            run_id: s.run_id.clone(),
            seq: s.seq,
            window_start_us: s.window_start_us,
            window_end_us: s.window_end_us,
            active_users: s.active_users,
            dropped_iterations: s.dropped_iterations,
            endpoints,
        })
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
                EndpointStats {
                    requests: e.requests,
                    failures: e.failures,
                    status,
                    errors: e.errors.into_iter().collect(),
                    bytes_received: e.bytes_received,
                    latency: snapshot::decode(&e.latency_hdr)?,
                    ttfb: snapshot::decode(&e.ttfb_hdr)?,
                    service: snapshot::decode(&e.service_hdr)?,
                },
            ));
        }
        Ok(Snapshot {
            run_id: s.run_id,
            seq: s.seq,
            window_start_us: s.window_start_us,
            window_end_us: s.window_end_us,
            active_users: s.active_users,
            dropped_iterations: s.dropped_iterations,
            endpoints,
        })
    }
}
