//! Tenants of the demo target: created and deleted once per test by `setup:` and `teardown:`, used by every user in between.
//!
//! `POST /api/tenants` makes one, `GET /api/tenants/{id}/items` answers 404
//! for an id it does not know, `DELETE /api/tenants/{id}` removes it; the
//! counts (`/__squall/tenants`) let a test check that setup ran once and
//! that every user carried the id it captured.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// The most tenants alive at once: a scenario creates one per test, so more
/// means a runaway loop, which gets 503 rather than the target's memory.
pub const MAX_TENANTS: usize = 10_000;

#[derive(Debug, Default)]
struct Counts {
    next: u64,
    created: u64,
    deleted: u64,
    /// Requests for a tenant id that does not exist (404s).
    unknown: u64,
    /// Item requests served to tenants that existed, deleted ones included.
    hits: u64,
    /// Each live tenant and the item requests it served.
    live: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct TenantStore {
    counts: Mutex<Counts>,
}

impl TenantStore {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new tenant's id, or `None` when [`MAX_TENANTS`] are alive.
    pub fn create(&self) -> Option<String> {
        let mut c = self.counts();
        if c.live.len() >= MAX_TENANTS {
            return None;
        }
        c.next += 1;
        c.created += 1;
        let id = format!("tn-{}", c.next);
        c.live.insert(id.clone(), 0);
        Some(id)
    }

    /// Counts one item request; false (and counted as unknown) for an id that is not alive.
    pub fn hit(&self, id: &str) -> bool {
        let mut c = self.counts();
        match c.live.get_mut(id) {
            Some(n) => {
                *n += 1;
                c.hits += 1;
                true
            }
            None => {
                c.unknown += 1;
                false
            }
        }
    }

    /// Removes a tenant; false (and counted as unknown) for an id that is not alive.
    pub fn delete(&self, id: &str) -> bool {
        let mut c = self.counts();
        if c.live.remove(id).is_some() {
            c.deleted += 1;
            true
        } else {
            c.unknown += 1;
            false
        }
    }

    /// What `/__squall/tenants` answers.
    pub fn stats(&self) -> Value {
        let c = self.counts();
        json!({
            "created": c.created,
            "deleted": c.deleted,
            "unknown": c.unknown,
            "hits": c.hits,
            "live": c.live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_counted_from_creation_to_deletion() {
        let store = TenantStore::default();
        let id = store.create().expect("room");
        assert!(store.hit(&id) && store.hit(&id));
        assert!(!store.hit("tn-999"));
        assert!(store.delete(&id));
        assert!(!store.delete(&id));
        assert!(!store.hit(&id));
        assert_eq!(
            store.stats(),
            json!({"created": 1, "deleted": 1, "unknown": 3, "hits": 2, "live": {}})
        );
        for _ in 0..MAX_TENANTS {
            store.create().expect("room");
        }
        assert!(store.create().is_none());
    }
}
