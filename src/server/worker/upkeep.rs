//! What a worker does besides moving messages: a reload's new limits for its connections, and
//! the faults the integration tests inject.

use std::io;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::super::bus::WorkerConfig;
use super::super::faults::Fault;
use super::Worker;
use crate::config::RoomAuth;
use crate::metrics::CloseReason;
use crate::relay::history::Keep;

impl Worker {
    pub(super) fn reload(&mut self, cfg: &WorkerConfig, now: Instant) {
        self.timers = cfg.timers;
        self.limit = cfg.send_queue_limit;
        self.hub
            .set_memory(cfg.config.server.history_memory / self.peers.len());
        self.hub.set_keep(|path| {
            cfg.config.route(path).map(|room| Keep {
                size: room.history_size,
                ttl: room.history_ttl,
            })
        });
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.conns[key];
            if !c.is_open() {
                continue;
            }
            match cfg.config.route(&c.path) {
                Some(room) if room.auth == RoomAuth::Jwt && !c.authenticated => {
                    info!(
                        "{} in {}: room now requires a token; closing",
                        c.peer, c.path
                    );
                    self.close(
                        key,
                        1008,
                        "authentication required",
                        CloseReason::Policy,
                        now,
                    );
                }
                Some(room) => {
                    c.session.set_max_message_size(room.max_message_size);
                    c.compress_from = room.compress_from();
                    c.session.set_rate(room.max_messages_per_second, now);
                    let id = c.room;
                    self.hub.set_echo(id, room.echo);
                }
                None => {
                    info!("{} in {}: room removed by reload; closing", c.peer, c.path);
                    self.close(key, 1001, "room removed", CloseReason::RoomRemoved, now);
                }
            }
        }
    }

    pub(super) fn inject_fault(&mut self) {
        match self.fault {
            Some(Fault::Panic) => panic!("test fault: worker {} panics", self.me),
            Some(Fault::Wedge) => {
                warn!("test fault: worker {} wedges", self.me);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Some(Fault::PollError) => {
                self.fault_poll = Some(io::Error::other("test fault: poll failed"));
            }
            None => {}
        }
    }
}
