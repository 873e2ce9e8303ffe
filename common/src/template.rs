//! PLACEHOLDER — replaced by the template engine (see brief).
use std::collections::HashMap;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("undefined variable `{0}`")]
    Undefined(String),
}

pub struct Vars<'a> {
    pub user_id: u64,
    pub worker_index: u32,
    pub captured: &'a HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Template(String);

impl Template {
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        Ok(Template(text.to_owned()))
    }
    pub fn compile_json(v: &serde_json::Value) -> Result<Template, TemplateError> {
        Ok(Template(v.to_string()))
    }
    pub fn as_static(&self) -> Option<&str> {
        Some(&self.0)
    }
    pub fn render<R: rand::Rng>(&self, _vars: &Vars<'_>, _rng: &mut R, out: &mut String) -> Result<(), RenderError> {
        out.push_str(&self.0);
        Ok(())
    }
}
