//! Per-thread, per-endpoint recording: the hot path writes here without locks or cross-thread traffic.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};

use squall_common::EndpointStats;
use squall_common::snapshot::record_micros;

use crate::http::Outcome;

/// Raw per-request latencies for auditing (`--samples-file`); off by default.
#[derive(Debug, Clone)]
pub struct SampleLog(Arc<Mutex<BufWriter<File>>>);

impl SampleLog {
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(SampleLog(Arc::new(Mutex::new(BufWriter::new(
            File::create(path)?,
        )))))
    }

    fn write(&self, endpoint: usize, latency_us: u64) {
        if let Ok(mut w) = self.0.lock() {
            let _ = writeln!(w, "{endpoint}\t{latency_us}");
        }
    }

    pub fn flush(&self) {
        if let Ok(mut w) = self.0.lock() {
            let _ = w.flush();
        }
    }
}

/// One engine thread's statistics since the last flush, indexed by endpoint.
#[derive(Debug)]
pub struct Recorder {
    stats: Vec<EndpointStats>,
    /// How late scheduled requests started against their intended time, µs.
    lag: hdrhistogram::Histogram<u64>,
    /// How late the open model's schedule took each arrival in hand, µs:
    /// the part of `lag` that is the generator's own (`Arrivals::see`).
    generator_lag: hdrhistogram::Histogram<u64>,
    samples: Option<SampleLog>,
}

impl Recorder {
    pub fn new(endpoints: usize, samples: Option<SampleLog>) -> Self {
        Recorder {
            stats: (0..endpoints).map(|_| EndpointStats::new()).collect(),
            lag: squall_common::snapshot::new_histogram(),
            generator_lag: squall_common::snapshot::new_histogram(),
            samples,
        }
    }

    pub fn record(&mut self, endpoint: usize, o: &Outcome) {
        let Some(s) = self.stats.get_mut(endpoint) else {
            return;
        };
        s.requests += 1;
        if let Some(code) = o.status {
            *s.status.entry(code).or_default() += 1;
        }
        if let Some(kind) = o.error {
            s.failures += 1;
            *s.errors.entry(kind.as_str().to_owned()).or_default() += 1;
        }
        s.bytes_received += o.bytes;
        record_micros(&mut s.latency, o.latency_us);
        record_micros(&mut s.service, o.service_us);
        if let Some(t) = o.ttfb_us {
            record_micros(&mut s.ttfb, t);
        }
        if let Some(log) = &self.samples {
            log.write(endpoint, o.latency_us);
        }
    }

    /// Counts a failed response under the check it failed (recorded with
    /// `record` just before, in the same interval). The name is copied once
    /// per interval, not per failure.
    pub fn record_check(&mut self, endpoint: usize, name: &str) {
        let Some(s) = self.stats.get_mut(endpoint) else {
            return;
        };
        match s.checks.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                s.checks.insert(name.to_owned(), 1);
            }
        }
    }

    /// Records how late a scheduled request started (open model, pacing).
    pub fn record_lag(&mut self, micros: u64) {
        record_micros(&mut self.lag, micros);
    }

    /// Records how late the open model's schedule took an arrival in hand.
    pub fn record_generator_lag(&mut self, micros: u64) {
        record_micros(&mut self.generator_lag, micros);
    }

    /// Hands over the interval's stats and lags, and starts a fresh interval.
    /// Copies then resets, so the recording side keeps its allocations.
    pub fn take(&mut self) -> Interval {
        let stats = self.stats.clone();
        for s in &mut self.stats {
            s.reset();
        }
        let lag = self.lag.clone();
        self.lag.reset();
        let generator_lag = self.generator_lag.clone();
        self.generator_lag.reset();
        if let Some(log) = &self.samples {
            log.flush();
        }
        Interval {
            stats,
            lag,
            generator_lag,
        }
    }
}

/// One engine thread's recording since the last flush (`Recorder::take`).
#[derive(Debug)]
pub struct Interval {
    pub stats: Vec<EndpointStats>,
    pub lag: hdrhistogram::Histogram<u64>,
    pub generator_lag: hdrhistogram::Histogram<u64>,
}

/// The recorder shared by every user task on one engine thread.
pub type SharedRecorder = std::rc::Rc<RefCell<Recorder>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ErrorKind;

    #[test]
    fn records_and_takes() {
        let mut r = Recorder::new(2, None);
        let ok = Outcome {
            status: Some(200),
            error: None,
            latency_us: 1500,
            service_us: 1500,
            ttfb_us: Some(1000),
            bytes: 10,
        };
        r.record(0, &ok);
        r.record(
            1,
            &Outcome {
                status: None,
                error: Some(ErrorKind::Connect),
                ttfb_us: None,
                ..ok
            },
        );
        r.record(7, &ok); // unknown endpoint: ignored, never panics
        let taken = r.take().stats;
        assert_eq!(taken[0].requests, 1);
        assert_eq!(taken[0].status[&200], 1);
        assert_eq!(taken[1].failures, 1);
        assert_eq!(taken[1].errors["connect"], 1);
        assert_eq!(taken[0].latency.len(), 1);
        let again = r.take().stats;
        assert!(again.iter().all(EndpointStats::is_empty));
    }
}
