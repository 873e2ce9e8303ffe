//! What the demo target remembers: the tokens it issued and the workflows users created, both bounded so a long run holds memory steady.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::Rng;
use serde::Serialize;

/// Prefix of issued tokens; it makes them recognisable in logs and lets the
/// auth check reject foreign tokens before touching any lock.
pub(super) const TOKEN_PREFIX: &str = "sq_";

/// Token shards: a power of two so that the shard is picked with a mask, and
/// enough of them that concurrent logins and checks rarely meet on one lock.
const TOKEN_SHARDS: usize = 16;

/// Tokens kept per shard (about a million in all, 32 bytes each): enough for
/// any realistic run that logs in once per virtual user, while a run that
/// logs in on every iteration cannot grow memory without bound. The oldest
/// token of a full shard is forgotten first, being the least likely in use.
const TOKENS_PER_SHARD: usize = 1 << 16;

/// Created workflows kept in memory; beyond this the oldest is dropped, so a
/// long run creating workflows at full rate holds memory steady.
const MAX_WORKFLOWS: usize = 10_000;

/// Locks a mutex even if a panicking handler poisoned it: the guarded data
/// are plain collections that stay consistent, and the demo must keep serving.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Issued tokens, sharded so that logins and auth checks from many
/// connections rarely contend. Tokens are stored as their 128-bit value,
/// which avoids a heap allocation per token and per check.
pub(super) struct TokenStore {
    shards: Vec<Mutex<TokenShard>>,
}

#[derive(Default)]
struct TokenShard {
    set: HashSet<u128>,
    /// Issue order, to forget the oldest token when the shard is full.
    order: VecDeque<u128>,
}

impl TokenStore {
    pub(super) fn new() -> Self {
        TokenStore {
            shards: (0..TOKEN_SHARDS)
                .map(|_| Mutex::new(TokenShard::default()))
                .collect(),
        }
    }

    fn shard(&self, value: u128) -> &Mutex<TokenShard> {
        &self.shards[(value as usize) & (TOKEN_SHARDS - 1)]
    }

    /// Issues and remembers a fresh random token.
    pub(super) fn issue(&self) -> String {
        let value: u128 = rand::rng().random();
        let mut shard = lock(self.shard(value));
        if shard.set.insert(value) {
            shard.order.push_back(value);
            if shard.order.len() > TOKENS_PER_SHARD
                && let Some(oldest) = shard.order.pop_front()
            {
                shard.set.remove(&oldest);
            }
        }
        format!("{TOKEN_PREFIX}{value:032x}")
    }

    /// Whether `token` is one this target issued (and still remembers).
    pub(super) fn is_valid(&self, token: &str) -> bool {
        let Some(hex) = token.strip_prefix(TOKEN_PREFIX) else {
            return false;
        };
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        match u128::from_str_radix(hex, 16) {
            Ok(value) => lock(self.shard(value)).set.contains(&value),
            Err(_) => false,
        }
    }
}

#[derive(Clone, Serialize)]
pub(super) struct Workflow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) steps: u32,
}

/// Workflows created through the API, bounded by [`MAX_WORKFLOWS`].
#[derive(Default)]
pub(super) struct WorkflowStore {
    pub(super) by_id: HashMap<String, Workflow>,
    order: VecDeque<String>,
}

impl WorkflowStore {
    pub(super) fn insert(&mut self, wf: Workflow) {
        self.order.push_back(wf.id.clone());
        self.by_id.insert(wf.id.clone(), wf);
        while self.order.len() > MAX_WORKFLOWS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_store_is_bounded_and_validates() {
        let store = TokenStore::new();
        let first = store.issue();
        assert!(store.is_valid(&first));
        assert!(!store.is_valid("sq_0123"));
        assert!(!store.is_valid(&first.replace(TOKEN_PREFIX, "xx_")));
        for _ in 0..(TOKENS_PER_SHARD * TOKEN_SHARDS + 10_000) {
            store.issue();
        }
        let total: usize = store.shards.iter().map(|s| lock(s).set.len()).sum();
        assert!(total <= TOKENS_PER_SHARD * TOKEN_SHARDS);
    }

    #[test]
    fn workflow_store_is_bounded() {
        let mut store = WorkflowStore::default();
        for i in 0..(MAX_WORKFLOWS + 50) {
            store.insert(Workflow {
                id: i.to_string(),
                name: "w".into(),
                steps: 1,
            });
        }
        assert_eq!(store.by_id.len(), MAX_WORKFLOWS);
        assert_eq!(store.order.len(), MAX_WORKFLOWS);
        assert!(!store.by_id.contains_key("0"));
    }
}
