//! The acceptor's part of an API call: the room's path is resolved here, where rooms are admitted
//! (a publish into a room nobody has joined yet makes it), and the call goes on to the worker that
//! carries it out: the room's owner, or every worker for what every worker holds a share of.
//! With `[cluster]`, the room list, room info and presence go to the cluster registry instead
//! (every node's members), except the registry's own calls for this node's snapshot (`local`).

use super::*;
use crate::relay::RoomId;
use crate::relay::history::Keep;
use crate::server::api::work::{Gather, Job, Kind, Reply, Target};
use crate::server::api::{Call, CallId, Outcome, ToApi, Who};

impl Acceptor {
    pub(super) fn api_call(&mut self, id: CallId, call: Call, reply: Mailbox<ToApi>, local: bool) {
        let refuse = |reply: Mailbox<ToApi>, status: u16, reason: &str| {
            let reason = reason.to_owned();
            reply.send(ToApi::Done(id, Outcome::Refused { status, reason }));
        };
        if self.listeners.is_empty() {
            return refuse(reply, 503, "shutting down");
        }
        let n = self.workers.len();
        let direct = |reply| Reply::direct(id, reply);
        let path = match &call {
            Call::Rooms { .. } => None,
            Call::Publish { path, .. }
            | Call::Room { path }
            | Call::History { path, .. }
            | Call::Presence { path }
            | Call::Disconnect { path, .. } => Some(path.clone()),
        };
        let room_config = path.as_deref().map(|p| self.config.route(p));
        if let Some(None) = room_config {
            return refuse(reply, 404, "no room at this path");
        }
        let room_config = room_config.flatten().cloned();
        let registry = self.registry.as_ref().filter(|_| !local);
        match call {
            Call::Publish { path, message } => {
                let rc = room_config.expect("a room");
                if message.bytes.len() > rc.max_message_size {
                    return refuse(reply, 413, "message over the room's max_message_size");
                }
                // With a cluster, Redis numbers the message and no room is made here; the calls
                // of one path go through one worker so that they reach Redis in order.
                let (room, worker) = match &self.cluster {
                    None => {
                        let room = self.admission.room_for(&path);
                        (room, room.owner(n).0 as usize)
                    }
                    Some(_) => (RoomId(0), path_worker(&path, n)),
                };
                let job = Job::Publish {
                    room,
                    path: path.into(),
                    keep: Keep {
                        size: rc.history_size,
                        ttl: rc.history_ttl,
                    },
                    compress_from: rc.compress_from(),
                    message,
                };
                self.send_job(worker, job, direct(reply));
            }
            Call::Rooms { prefix, limit } => {
                if let Some(r) = registry {
                    return r.ask(id, Call::Rooms { prefix, limit }, reply);
                }
                let mut by_owner: Vec<Vec<(RoomId, String, usize)>> = vec![Vec::new(); n];
                for (room, path, members) in self.admission.open_rooms(&prefix) {
                    by_owner[room.owner(n).0 as usize].push((room, path.to_owned(), members));
                }
                self.gather_states(id, reply, by_owner, Kind::Rooms { limit });
            }
            Call::Room { path } => {
                if let Some(r) = registry {
                    return r.ask(id, Call::Room { path }, reply);
                }
                let Some(room) = self.admission.find(&path) else {
                    return refuse(reply, 404, "room not open");
                };
                let members = self.admission.members_of(room);
                if members == 0 {
                    return refuse(reply, 404, "room not open");
                }
                let mut by_owner: Vec<Vec<(RoomId, String, usize)>> = vec![Vec::new(); n];
                by_owner[room.owner(n).0 as usize].push((room, path, members));
                self.gather_states(id, reply, by_owner, Kind::Room);
            }
            Call::History { path, since, limit } => {
                let ttl = room_config.expect("a room").history_ttl;
                // With a cluster the room's stream in Redis answers, open here or not.
                let room = match self.admission.find(&path) {
                    Some(room) => room,
                    None if self.cluster.is_some() => RoomId(0),
                    None => return refuse(reply, 404, "room not open and keeps nothing"),
                };
                let job = Job::History {
                    room,
                    path,
                    since,
                    limit,
                    ttl,
                };
                self.send_job(room.owner(n).0 as usize, job, direct(reply));
            }
            Call::Presence { path } => {
                if !room_config.expect("a room").presence {
                    return refuse(
                        reply,
                        404,
                        "presence is off in this room (presence = false)",
                    );
                }
                if let Some(r) = registry {
                    return r.ask(id, Call::Presence { path }, reply);
                }
                let Some(room) = self.admission.find(&path) else {
                    let members = Vec::new();
                    let outcome = Outcome::Presence {
                        room: path,
                        members,
                    };
                    reply.send(ToApi::Done(id, outcome));
                    return;
                };
                let g = Gather::new(id, reply, Kind::Presence { room: path }, n);
                for w in 0..n {
                    self.send_job(w, Job::Presence { room }, Reply::gather(&g));
                }
            }
            Call::Disconnect { path, who, ban } => {
                let rc = room_config.expect("a room");
                if let (Who::User(user), Some(ban)) = (&who, ban) {
                    if rc.auth != crate::config::RoomAuth::Jwt {
                        return refuse(reply, 400, "ban needs a room with auth = \"jwt\"");
                    }
                    self.ban(&path, user, ban);
                }
                let room = self.admission.find(&path);
                let target = match who {
                    Who::Member(m) => {
                        // With a cluster an id names its node (`0-17@b`): this node closes its
                        // own members only.
                        let (m, node) = match m.split_once('@') {
                            Some((m, node)) => (m, Some(node)),
                            None => (m.as_str(), None),
                        };
                        let here = self.cluster.as_ref().map(|c| &*c.node);
                        if let Some(node) = node
                            && here != Some(node)
                        {
                            let why = format!("member of node {node}: send the call to that node");
                            return refuse(reply, 421, &why);
                        }
                        let parsed = m
                            .split_once('-')
                            .and_then(|(w, c)| Some((w.parse::<usize>().ok()?, c.parse().ok()?)));
                        let Some((w, conn)) = parsed.filter(|&(w, _)| w < n) else {
                            return refuse(reply, 400, "member is not a member id (as in welcome)");
                        };
                        let Some(room) = room else {
                            reply.send(ToApi::Done(id, Outcome::Disconnected(0)));
                            return;
                        };
                        let job = Job::Disconnect {
                            room,
                            who: Target::Member(conn),
                        };
                        return self.send_job(w, job, Reply::direct(id, reply));
                    }
                    Who::User(user) => Target::User(user),
                };
                let Some(room) = room else {
                    reply.send(ToApi::Done(id, Outcome::Disconnected(0)));
                    return;
                };
                let g = Gather::new(id, reply, Kind::Disconnected, n);
                for w in 0..n {
                    let who = target.clone();
                    let job = Job::Disconnect { room, who };
                    self.send_job(w, job, Reply::gather(&g));
                }
            }
        }
    }

    fn gather_states(
        &mut self,
        id: CallId,
        reply: Mailbox<ToApi>,
        by_owner: Vec<Vec<(RoomId, String, usize)>>,
        kind: Kind,
    ) {
        let busy = by_owner.iter().filter(|r| !r.is_empty()).count();
        let g = Gather::new(id, reply, kind, busy);
        for (w, rooms) in by_owner.into_iter().enumerate() {
            if !rooms.is_empty() {
                self.send_job(w, Job::States { rooms }, Reply::gather(&g));
            }
        }
    }

    fn send_job(&mut self, worker: usize, job: Job, reply: Reply) {
        self.workers[worker].send(ToWorker::Api { job, reply });
    }
}

/// Users banned from rooms through the API: (room path, `sub`) → when the ban was made (unix
/// seconds; tokens issued before it are refused) and until when it holds.
#[derive(Default)]
pub(super) struct Bans {
    map: std::collections::HashMap<(Box<str>, Box<str>), (i64, Instant)>,
}

/// Bans held at once at most: past it, the ones that ended are dropped, then the oldest.
const BANS_MAX: usize = 100_000;

impl Bans {
    /// Whether a token for `user` issued at `iat` (none: issued before any ban) is refused in the
    /// room at `path` now.
    pub(super) fn refuses(&self, path: &str, user: &str, iat: Option<i64>) -> bool {
        match self.map.get(&(Box::from(path), Box::from(user))) {
            Some(&(at, until)) => Instant::now() < until && iat.is_none_or(|iat| iat < at),
            None => false,
        }
    }
}

impl Acceptor {
    fn ban(&mut self, path: &str, user: &str, length: std::time::Duration) {
        let now = Instant::now();
        let map = &mut self.bans.map;
        if map.len() >= BANS_MAX {
            map.retain(|_, &mut (_, until)| until > now);
        }
        if map.len() >= BANS_MAX
            && let Some(oldest) = map.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        map.insert((path.into(), user.into()), (at, now + length));
    }
}

/// The worker an API publish of `path` goes through with a cluster: the same for every call
/// of the path (FNV-1a of its bytes).
fn path_worker(path: &str, workers: usize) -> usize {
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % workers as u64) as usize
}
