//! The hub in cluster mode, for rooms with presence: members on every node. Each node's owner
//! numbers its own members' joins and leaves and shares each event, with its member count, with
//! the other nodes' owners ([`Sink::share`]); they hand the event to their v1 members and keep
//! the count. Counts are shared again every [`REFRESH`] (with no event), and a node not heard of
//! for [`FORGET`] is forgotten (it died): its members leave the count, and a `members` event
//! tells the room. So the welcome's `members` and the `members` events count every node's.

use std::time::Duration;

use super::{Hub, Message, Share, Sink};
use crate::relay::RoomId;

/// How often a node tells the others its member count of each room with presence.
pub const REFRESH: Duration = Duration::from_secs(5);
/// A node not heard of for this long is gone from the counts.
pub const FORGET: Duration = Duration::from_secs(15);

impl<F: Message, M: Copy + PartialEq> Hub<F, M> {
    /// Cluster mode, on the owner: another node (`node`) has `members` members of `room` now,
    /// and `event` happened there (a join, leave or count, for the v1 members), if any; `ask`:
    /// it wants this node's count.
    pub fn noticed(
        &mut self,
        room: RoomId,
        node: u64,
        members: usize,
        event: Option<F>,
        ask: bool,
        sink: &mut impl Sink<F, M>,
    ) {
        if self.parked.contains_key(&room) {
            return;
        }
        let now = self.now;
        let Some(p) = self.owned.get_mut(&room).and_then(|o| o.presence.as_mut()) else {
            return;
        };
        let before = match p.remote.iter_mut().find(|r| r.0 == node) {
            Some(r) => std::mem::replace(r, (node, members, now)).1,
            None => {
                p.remote.push((node, members, now));
                0
            }
        };
        if event.is_none() && before != members {
            // A change no event explained (this node had not heard of those members): the
            // room gets the count.
            p.dropped = true;
        }
        if ask {
            // Due at the next refresh (about a second); never an ask back, so asks end there.
            p.shared = Some(now.checked_sub(REFRESH).unwrap_or(now));
        }
        if let Some(frame) = event {
            self.presence_counts.sent += 1;
            self.announce_here(room, frame, sink);
        }
    }

    /// Cluster mode, about once a second: share this node's counts that are due, and forget the
    /// nodes not heard of for [`FORGET`] (the room then gets a `members` event).
    pub(super) fn refresh_counts(&mut self, sink: &mut impl Sink<F, M>) {
        let now = self.now;
        for (&room, owned) in &mut self.owned {
            let Some(p) = owned.presence.as_mut() else {
                continue;
            };
            let before = p.remote.len();
            p.remote
                .retain(|r| now.saturating_duration_since(r.2) < FORGET);
            if p.remote.len() != before {
                p.dropped = true;
            }
            if p.shared
                .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH)
            {
                let ask = p.shared.is_none();
                p.shared = Some(now);
                let share = Share {
                    event: None,
                    members: p.members,
                    ask,
                };
                sink.share(room, &owned.path, share);
            }
        }
    }
}
