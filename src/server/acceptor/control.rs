//! The acceptor's answers to signals: SIGHUP reloads the config, SIGTERM/SIGINT drain.

use super::*;

impl Acceptor {
    /// SIGHUP: read the file again and apply it, or keep the running config if it is broken.
    pub(super) fn reload(&mut self) {
        if let Some(n) = &self.notify {
            n.reloading();
        }
        self.apply_reload();
        if let Some(n) = &self.notify {
            n.ready();
        }
    }

    fn apply_reload(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.reloads.read(&mut buf), Ok(n) if n > 0) {}
        let Some(source) = &self.source else {
            warn!("SIGHUP: running on the built-in config (no --config); nothing to reload");
            return;
        };
        let mut new = match Config::load(&source.path) {
            Ok(c) => c,
            Err(e) => {
                self.counts.reloads_failed += 1;
                self.counts.last_reload_failed = true;
                warn!("reload failed, the running config stays in force: {e}");
                return;
            }
        };
        if new.server.listen != source.listen {
            warn!(
                "{}: listen changed; the listen addresses cannot change on reload: restart to apply",
                source.path.display()
            );
        }
        if new.server.workers != self.config.server.workers {
            warn!(
                "{}: workers changed; the worker count cannot change on reload: restart to apply",
                source.path.display()
            );
        }
        if new.cluster != self.config.cluster {
            // The Redis threads (one per shard) are made at start; a new list on a running
            // node would also move rooms away from the other nodes' shards.
            warn!(
                "{}: [cluster] changed; it cannot change on reload: restart every node to apply",
                source.path.display()
            );
        }
        new.server.listen = self.config.server.listen.clone();
        new.server.workers = self.config.server.workers;
        new.cluster = self.config.cluster.clone();
        let s = &new.server;
        self.admission
            .set_limits(s.max_connections, s.max_connections_per_ip);
        let wc = Arc::new(WorkerConfig {
            timers: Timers {
                ping_interval: s.ping_interval,
                idle_timeout: s.idle_timeout,
                close_timeout: s.close_timeout,
            },
            send_queue_limit: s.send_queue_limit,
            config: new.clone(),
        });
        for w in &self.workers {
            w.send(ToWorker::Reload(Arc::clone(&wc)));
        }
        if let Some(api) = &self.api {
            api.send(crate::server::api::ToApi::Reload(Arc::new(new.clone())));
        }
        info!(
            "config reloaded from {}: {} rooms",
            source.path.display(),
            new.rooms.len()
        );
        self.config = new;
        self.counts.reloads_ok += 1;
        self.counts.last_reload_failed = false;
    }

    /// Read the signal pipe empty; one byte per signal delivered.
    fn drain_signals(&mut self) -> usize {
        let mut buf = [0u8; 64];
        let mut n = 0;
        while let Ok(k @ 1..) = self.signals.read(&mut buf) {
            n += k;
        }
        n
    }

    /// Stop accepting, tell every worker to close its clients with 1001, and wait for them until
    /// `shutdown_grace` has passed.
    pub(super) fn shutdown(&mut self) -> io::Result<()> {
        if let Some(n) = &self.notify {
            n.stopping();
        }
        let grace = self.config.server.shutdown_grace;
        info!(
            "shutting down: closing {} connections (grace {grace:?})",
            self.admission.open()
        );
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let keys: Vec<usize> = self.pending.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drop_pending(key);
        }
        let deadline = Instant::now() + grace;
        for w in &self.workers {
            w.send(ToWorker::Shutdown { deadline });
        }
        if self.drain_signals() > 1 {
            warn!("second signal: exiting without waiting for clients");
            std::process::exit(1);
        }
        // Workers give up on their clients at the deadline; the slack lets them report.
        let hard_stop = deadline + Duration::from_secs(1);
        let mut stopped = 0;
        let mut events = Events::with_capacity(64);
        while stopped < self.workers.len() {
            let left = hard_stop.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    "{} workers did not stop in time",
                    self.workers.len() - stopped
                );
                break;
            }
            match self.poll.poll(&mut events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => stopped += self.drain_inbox(),
                    SIGNAL => {
                        warn!("second signal: exiting without waiting for clients");
                        std::process::exit(1);
                    }
                    _ => {}
                }
            }
        }
        info!("shutdown complete");
        Ok(())
    }
}
