//! Why a scenario file could not be loaded, worded for the person who wrote it.

/// The Display is what the user sees: it leads with the file (and the line and
/// column, or the dotted path of the bad value) so the mistake can be found.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A meaning error whose text could be found in the file.
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Located {
        file: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    #[error("{file}: no scenario named `{name}` (available: {available})")]
    UnknownScenario {
        file: String,
        name: String,
        available: String,
    },
    #[error(
        "{file}: holds several scenarios ({available}); choose one with --scenario NAME or run them all with --all"
    )]
    Ambiguous { file: String, available: String },
}
