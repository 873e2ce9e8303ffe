//! `Share` on the wire.

use squall_common::Share;

use crate::pb;

impl From<&Share> for pb::Share {
    fn from(s: &Share) -> Self {
        pb::Share {
            users_per_class: s.users_per_class.clone(),
            spawn_rate: s.spawn_rate,
        }
    }
}

impl From<pb::Share> for Share {
    fn from(s: pb::Share) -> Self {
        Share {
            users_per_class: s.users_per_class,
            spawn_rate: s.spawn_rate,
        }
    }
}
