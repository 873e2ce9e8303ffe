//! Workflow runs of the demo target: started by `POST /api/workflows/{id}/execute`,
//! done after a fixed number of status polls, so scenarios can test `poll:`.

use std::collections::HashMap;
use std::sync::Mutex;

/// Status polls a run answers `running` before it is `done` (the third poll sees `done`).
pub const POLLS_TO_DONE: u32 = 3;

/// The most runs kept; past it the store starts over, so a long run holds memory steady.
const MAX_RUNS: usize = 100_000;

/// One run: its workflow and how often its status was asked for.
#[derive(Debug, Clone)]
pub struct Run {
    pub workflow_id: String,
    pub polls: u32,
}

#[derive(Debug, Default)]
pub struct RunStore {
    runs: Mutex<HashMap<String, Run>>,
}

impl RunStore {
    /// Starts a run of `workflow_id` and returns its id.
    pub fn start(&self, workflow_id: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= MAX_RUNS {
            runs.clear();
        }
        runs.insert(
            id.clone(),
            Run {
                workflow_id: workflow_id.to_owned(),
                polls: 0,
            },
        );
        id
    }

    /// Counts one status poll and returns the run as it is now.
    pub fn poll(&self, id: &str) -> Option<Run> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let run = runs.get_mut(id)?;
        run.polls = run.polls.saturating_add(1);
        Some(run.clone())
    }

    /// The run without counting a poll.
    pub fn get(&self, id: &str) -> Option<Run> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(id).cloned()
    }
}
