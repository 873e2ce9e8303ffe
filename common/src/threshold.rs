//! PLACEHOLDER — replaced by thresholds (see brief).
use crate::report::{Report, ThresholdResult};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ThresholdError(pub String);

#[derive(Debug, Clone)]
pub struct Threshold { pub expr: String }

impl Threshold {
    pub fn parse(expr: &str) -> Result<Self, ThresholdError> { Ok(Threshold { expr: expr.into() }) }
    pub fn evaluate(&self, _report: &Report) -> ThresholdResult { ThresholdResult { expr: self.expr.clone(), passed: true, actual: 0.0 } }
}
