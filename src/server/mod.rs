//! The IO side: listeners, threads and sockets. [`run`] binds, starts the workers and runs the
//! acceptor on the calling thread until a shutdown completes. The room logic it drives lives in
//! [`crate::relay`]; this module only moves bytes and events.

mod acceptor;
pub mod api;
mod bus;
pub mod cluster;
mod conn;
mod faults;
mod flow;
mod outbox;
pub mod session;
mod wire;
mod worker;

use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use log::info;
use mio::{Poll, Waker};

pub use acceptor::{ConfigSource, client_ip};
use bus::Mailbox;
use conn::Timers;
/// tungstenite's settings for a connection, as the workers use them (for fuzz targets and tests).
pub use session::ws_config;
pub use wire::Opcode;

use crate::config::Config;
use crate::metrics::WorkerCounters;
use crate::relay::WorkerId;

/// Pending connections the kernel queues per listener before the acceptor takes them.
const LISTEN_BACKLOG: i32 = 4096;

/// The exit status when a thread dies (a panic, a failed poll): EX_SOFTWARE. systemd's
/// `Restart=on-failure` restarts the daemon; a relay with a dead thread would drop the messages of
/// every room that thread owns while looking healthy.
pub const EXIT_THREAD_DIED: i32 = 70;

/// Make any panic, on any thread, end the process at once with [`EXIT_THREAD_DIED`]. The report
/// goes through the logger, as one error line (so under journald it carries `<3>`).
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        log::error!(
            "thread {} panicked{location}: {message}; exiting with status {EXIT_THREAD_DIED}",
            thread.name().unwrap_or("?")
        );
        std::process::exit(EXIT_THREAD_DIED);
    }));
}

/// A random 64-bit seed from the kernel (for room epochs). Falls back to the clock and the pid,
/// still different on every start.
fn random_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom(2) writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        return u64::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// `[cluster] name`, or `hostname:port` (the first listen port) when it is empty.
fn node_name(name: &str, config: &Config) -> String {
    if !name.is_empty() {
        return name.to_owned();
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into `buf`.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_owned()
    };
    let port = config.server.listen.first().map_or(0, |a| a.port());
    format!("{host}:{port}")
}

/// Why the server could not run.
#[derive(Debug)]
pub enum ServerError {
    /// A listen address could not be bound (in use, not local, no permission).
    Bind { addr: SocketAddr, source: io::Error },
    /// The OS refused a poll, a waker, a thread or a signal handler: nothing the config can fix.
    Setup {
        what: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Setup { what, source } => write!(f, "cannot set up {what}: {source}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind { source, .. } | ServerError::Setup { source, .. } => Some(source),
        }
    }
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> ServerError {
    move |source| ServerError::Setup { what, source }
}

/// Bind the configured addresses, print `listening on ADDR` per listener on stdout, and serve
/// until SIGTERM or SIGINT has been handled (every client closed with 1001, or the grace period
/// over).
pub fn run(config: Config, source: Option<ConfigSource>) -> Result<(), ServerError> {
    // Before any thread starts: listen_fds edits the environment.
    let activated = crate::notify::listen_fds().map_err(setup("the sockets systemd passed"))?;
    let mut listeners = Vec::new();
    if activated.is_empty() {
        for &addr in &config.server.listen {
            let l = mio::net::TcpListener::bind(addr)
                .map_err(|source| ServerError::Bind { addr, source })?;
            // mio listens with a backlog of 128; a burst of connections past it has its SYNs
            // dropped and waits a second for the retry. listen(2) again raises it (the kernel caps
            // it at net.core.somaxconn).
            // SAFETY: listen(2) on a socket this function owns.
            unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), LISTEN_BACKLOG) };
            listeners.push(l);
        }
    } else {
        info!(
            "socket-activated: serving on the {} sockets systemd passed, not on `listen`",
            activated.len()
        );
        listeners.extend(activated.into_iter().map(mio::net::TcpListener::from_std));
    }
    // Before the listeners are announced, so that every connection is accepted the same way.
    let tuned = listeners.iter().map(acceptor::tune).collect();
    let notify = crate::notify::Notifier::from_env();

    let (signals_rx, signals_tx) =
        std::os::unix::net::UnixStream::pair().map_err(setup("the signal pipe"))?;
    signals_rx
        .set_nonblocking(true)
        .map_err(setup("the signal pipe"))?;
    signals_tx
        .set_nonblocking(true)
        .map_err(setup("the signal pipe"))?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = signals_tx.try_clone().map_err(setup("the signal pipe"))?;
        signal_hook::low_level::pipe::register(sig, tx).map_err(setup("signal handlers"))?;
    }
    let (reloads_rx, reloads_tx) =
        std::os::unix::net::UnixStream::pair().map_err(setup("the signal pipe"))?;
    reloads_rx
        .set_nonblocking(true)
        .map_err(setup("the signal pipe"))?;
    reloads_tx
        .set_nonblocking(true)
        .map_err(setup("the signal pipe"))?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, reloads_tx)
        .map_err(setup("signal handlers"))?;

    let acceptor_poll = Poll::new().map_err(setup("the acceptor's poll"))?;
    let acceptor_waker =
        Arc::new(Waker::new(acceptor_poll.registry(), acceptor::WAKER).map_err(setup("a waker"))?);
    let (to_acceptor, acceptor_inbox) = Mailbox::new(acceptor_waker);

    let api = api::bind(&config, to_acceptor.clone())?;

    exit_on_panic();
    let n = config.server.workers;
    let mut polls = Vec::with_capacity(n);
    let mut mailboxes = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    let mut flows = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new().map_err(setup("a worker's poll"))?;
        let waker = Arc::new(Waker::new(poll.registry(), worker::WAKER).map_err(setup("a waker"))?);
        flows.push(flow::WorkerFlow::new(Arc::clone(&waker)));
        let (mb, rx) = Mailbox::new(waker);
        polls.push(poll);
        mailboxes.push(mb);
        inboxes.push(rx);
    }
    let counters: Vec<Arc<WorkerCounters>> = (0..n).map(|_| Arc::default()).collect();
    let timers = Timers {
        ping_interval: config.server.ping_interval,
        idle_timeout: config.server.idle_timeout,
        close_timeout: config.server.close_timeout,
    };
    let mut threads = Vec::with_capacity(n);
    let seed = random_seed();
    let cluster = match &config.cluster {
        Some(c) => {
            let name = node_name(&c.name, &config);
            let urls: Vec<&str> = c.shards.iter().map(|s| s.url.as_str()).collect();
            info!(
                "cluster: node {name}, redis {}, prefix {:?}{}",
                urls.join(", "),
                c.prefix,
                if urls.len() > 1 {
                    " (rooms spread by jump hash of the path)"
                } else {
                    ""
                }
            );
            let links = cluster::spawn(c, name.clone(), mailboxes.clone(), seed ^ 0x5eed)
                .map_err(setup("the Redis threads"))?;
            // The registry keeps its node snapshots on the first Redis of the list (the one
            // `c.redis` names), and answers 503 while that one is down.
            let state = Arc::clone(&links.shards[0].state);
            let registry = cluster::registry::spawn(c, name, to_acceptor.clone(), state)
                .map_err(setup("the registry thread"))?;
            Some((links, registry))
        }
        None => None,
    };
    let (cluster, registry) = cluster.unzip();
    for (i, ((poll, inbox), flow)) in polls.into_iter().zip(inboxes).zip(flows).enumerate() {
        let s = worker::WorkerSetup {
            id: WorkerId(i as u32),
            poll,
            inbox,
            peers: mailboxes.clone(),
            acceptor: to_acceptor.clone(),
            counters: Arc::clone(&counters[i]),
            timers,
            send_queue_limit: config.server.send_queue_limit,
            history_memory: config.server.history_memory,
            flow,
            seed: seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
            cluster: cluster.clone(),
        };
        counters[i].beat();
        let t = std::thread::Builder::new()
            .name(format!("wsrelay-w{i}"))
            .spawn(move || {
                if let Err(e) = worker::run(s) {
                    log::error!("worker w{i} failed: {e}; exiting with status {EXIT_THREAD_DIED}");
                    std::process::exit(EXIT_THREAD_DIED);
                }
            })
            .map_err(setup("a worker thread"))?;
        threads.push(t);
    }

    let mut stdout = io::stdout().lock();
    // Under systemd stdout and stderr are one journal stream: the plain line lands in the journal
    // already (at info, the stream's default), and the logger's copy would say it twice.
    let stdout_is_journal = crate::journal::is_journal(&stdout);
    for l in &listeners {
        let addr = l.local_addr().map_err(setup("a listener"))?;
        if !stdout_is_journal {
            info!("listening on {addr} with {n} workers");
        }
        // Tests and scripts read the bound address (port 0 picks one) from this line.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    if let Some(api) = &api {
        if !stdout_is_journal {
            info!("API listening on {}", api.addr);
        }
        // Tests and scripts read the API's bound address from this line.
        let _ = writeln!(stdout, "api listening on {}", api.addr);
    }
    if stdout_is_journal {
        info!("serving with {n} workers");
    }
    let _ = stdout.flush();
    drop(stdout);
    let (api_mailbox, api_counters) = match api {
        Some(api) => {
            let link = (api.mailbox.clone(), Arc::clone(&api.counters));
            threads.push(api.spawn()?);
            (Some(link.0), Some(link.1))
        }
        None => (None, None),
    };
    if let Some(n) = &notify {
        n.ready();
    }

    acceptor::run(acceptor::AcceptorSetup {
        poll: acceptor_poll,
        listeners,
        inbox: acceptor_inbox,
        workers: mailboxes,
        counters,
        signals: mio::net::UnixStream::from_std(signals_rx),
        reloads: mio::net::UnixStream::from_std(reloads_rx),
        config,
        source,
        notify,
        api: api_mailbox,
        api_counters,
        tuned,
        cluster: cluster.map(|c| c.health()),
        registry,
    })
    .map_err(setup("the acceptor loop"))?;
    // Workers that are still busy after the grace period end with the process.
    drop(threads);
    Ok(())
}
