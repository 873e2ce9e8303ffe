//! The exit codes of both binaries, per the command-line contract in DESIGN.md.

/// How a command ended, as the process's exit code says it to scripts and CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: the command did what was asked; for a test run, every threshold passed.
    Success = 0,
    /// 1: the run completed but a threshold failed.
    ThresholdFailed = 1,
    /// 2: invalid input or usage (scenario, flags, TLS files, a refused token or version); nothing was sent.
    InvalidInput = 2,
    /// 3: the run could not complete (no coordinator or workers, all workers lost, I/O).
    Incomplete = 3,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        let codes = [
            Exit::Success,
            Exit::ThresholdFailed,
            Exit::InvalidInput,
            Exit::Incomplete,
        ]
        .map(Exit::code);
        assert_eq!(codes, [0, 1, 2, 3]);
    }
}
