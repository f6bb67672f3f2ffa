//! Counters, their names, and the Prometheus text rendering of `GET /metrics`.
//!
//! Every metric name lives here. The hot path never touches an atomic per message: a worker counts
//! in a plain [`Tally`] and adds it to its shared [`WorkerCounters`] once per loop pass. No metric
//! has a per-room label: pattern rooms are unbounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a WebSocket connection ended; the `reason` label of `wsrelay_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (close frame or EOF).
    Normal,
    /// Nothing received for `idle_timeout`.
    Idle,
    /// Send queue past `send_queue_limit`.
    SlowConsumer,
    /// A message over `max_message_size` (1009).
    TooBig,
    /// Invalid UTF-8 in a text message (1007).
    BadUtf8,
    /// A compressed message that is not valid deflate data (1007).
    BadDeflate,
    /// Any other protocol violation (1002).
    Protocol,
    /// The server is shutting down (1001).
    Shutdown,
    /// The room was removed from the configuration (1001).
    RoomRemoved,
    /// Over the room's message rate, or publishing without the right (1008).
    Policy,
    /// The socket failed (reset, broken pipe).
    Error,
    /// Closed through the API (4001).
    Disconnected,
}

impl CloseReason {
    pub const ALL: [CloseReason; 12] = [
        CloseReason::Normal,
        CloseReason::Idle,
        CloseReason::SlowConsumer,
        CloseReason::TooBig,
        CloseReason::BadUtf8,
        CloseReason::BadDeflate,
        CloseReason::Protocol,
        CloseReason::Shutdown,
        CloseReason::RoomRemoved,
        CloseReason::Policy,
        CloseReason::Error,
        CloseReason::Disconnected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::Idle => "idle",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::TooBig => "too_big",
            CloseReason::BadUtf8 => "bad_utf8",
            CloseReason::BadDeflate => "bad_deflate",
            CloseReason::Protocol => "protocol",
            CloseReason::Shutdown => "shutdown",
            CloseReason::RoomRemoved => "room_removed",
            CloseReason::Policy => "policy",
            CloseReason::Error => "error",
            CloseReason::Disconnected => "disconnected",
        }
    }
}

/// A worker's counts since its last [`WorkerCounters::add`]; plain integers, no atomics.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub messages_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Times a publisher stopped being read by flow control.
    pub reads_paused: u64,
    /// Messages deflated (each once, whatever the number of recipients; twice for the rare
    /// message that some recipient needs compressed with a small window).
    pub deflate_calls: u64,
    /// Payload bytes given to deflate, and the compressed bytes it made of them.
    pub deflate_bytes_in: u64,
    pub deflate_bytes_out: u64,
    /// Of `frames_out`, the frames queued compressed.
    pub frames_out_compressed: u64,
    /// Kept messages queued to members that asked for a replay (`last`, `since`).
    pub messages_replayed: u64,
    /// Members that asked to resume (`since`/`epoch`) and got everything they missed, or not.
    pub resumes_recovered: u64,
    pub resumes_unrecovered: u64,
    /// Presence events handed to members (join, leave, counts), and those dropped past a
    /// room's rate (replaced by a count).
    pub presence_sent: u64,
    pub presence_coalesced: u64,
    pub closed: [u64; CloseReason::ALL.len()],
}

impl Tally {
    pub fn is_zero(&self) -> bool {
        self.messages_in == 0
            && self.reads_paused == 0
            && self.frames_out == 0
            && self.bytes_in == 0
            && self.bytes_out == 0
            && self.deflate_calls == 0
            && self.frames_out_compressed == 0
            && self.messages_replayed == 0
            && self.resumes_recovered == 0
            && self.resumes_unrecovered == 0
            && self.presence_sent == 0
            && self.presence_coalesced == 0
            && self.closed.iter().all(|&c| c == 0)
    }

    pub fn closed(&mut self, reason: CloseReason) {
        self.closed[reason as usize] += 1;
    }
}

/// One worker's shared counters, read by the acceptor when it renders `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    messages_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    reads_paused: AtomicU64,
    deflate_calls: AtomicU64,
    deflate_bytes_in: AtomicU64,
    deflate_bytes_out: AtomicU64,
    frames_out_compressed: AtomicU64,
    messages_replayed: AtomicU64,
    resumes_recovered: AtomicU64,
    resumes_unrecovered: AtomicU64,
    presence_sent: AtomicU64,
    presence_coalesced: AtomicU64,
    /// Messages and bytes kept by the rooms this worker sequences (gauges, set every pass).
    kept_messages: AtomicU64,
    kept_bytes: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// When the worker last completed a loop pass, in milliseconds since [`clock_ms`]'s start.
    last_pass: AtomicU64,
}

/// Milliseconds since the first call: a clock threads can share through an atomic.
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl WorkerCounters {
    /// The worker completed a loop pass now.
    pub fn beat(&self) {
        self.last_pass.store(clock_ms(), Relaxed);
    }

    /// Milliseconds since the worker last completed a loop pass.
    pub fn since_last_pass(&self) -> u64 {
        clock_ms().saturating_sub(self.last_pass.load(Relaxed))
    }

    /// What the rooms this worker sequences keep now.
    pub fn set_kept(&self, messages: usize, bytes: usize) {
        self.kept_messages.store(messages as u64, Relaxed);
        self.kept_bytes.store(bytes as u64, Relaxed);
    }

    /// Add a pass's tally and reset it.
    pub fn add(&self, t: &mut Tally) {
        if t.is_zero() {
            return;
        }
        self.messages_in.fetch_add(t.messages_in, Relaxed);
        self.frames_out.fetch_add(t.frames_out, Relaxed);
        self.bytes_in.fetch_add(t.bytes_in, Relaxed);
        self.bytes_out.fetch_add(t.bytes_out, Relaxed);
        self.reads_paused.fetch_add(t.reads_paused, Relaxed);
        self.deflate_calls.fetch_add(t.deflate_calls, Relaxed);
        self.deflate_bytes_in.fetch_add(t.deflate_bytes_in, Relaxed);
        self.deflate_bytes_out
            .fetch_add(t.deflate_bytes_out, Relaxed);
        self.frames_out_compressed
            .fetch_add(t.frames_out_compressed, Relaxed);
        self.messages_replayed
            .fetch_add(t.messages_replayed, Relaxed);
        self.resumes_recovered
            .fetch_add(t.resumes_recovered, Relaxed);
        self.resumes_unrecovered
            .fetch_add(t.resumes_unrecovered, Relaxed);
        self.presence_sent.fetch_add(t.presence_sent, Relaxed);
        self.presence_coalesced
            .fetch_add(t.presence_coalesced, Relaxed);
        for (c, n) in self.closed.iter().zip(t.closed) {
            if n > 0 {
                c.fetch_add(n, Relaxed);
            }
        }
        *t = Tally::default();
    }

    fn snapshot(&self) -> Tally {
        let mut closed = [0; CloseReason::ALL.len()];
        for (out, c) in closed.iter_mut().zip(&self.closed) {
            *out = c.load(Relaxed);
        }
        Tally {
            messages_in: self.messages_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            reads_paused: self.reads_paused.load(Relaxed),
            deflate_calls: self.deflate_calls.load(Relaxed),
            deflate_bytes_in: self.deflate_bytes_in.load(Relaxed),
            deflate_bytes_out: self.deflate_bytes_out.load(Relaxed),
            frames_out_compressed: self.frames_out_compressed.load(Relaxed),
            messages_replayed: self.messages_replayed.load(Relaxed),
            resumes_recovered: self.resumes_recovered.load(Relaxed),
            resumes_unrecovered: self.resumes_unrecovered.load(Relaxed),
            presence_sent: self.presence_sent.load(Relaxed),
            presence_coalesced: self.presence_coalesced.load(Relaxed),
            closed,
        }
    }
}

/// The acceptor's own counts (it is one thread; it owns them outright).
#[derive(Debug, Default, Clone)]
pub struct AcceptorCounts {
    /// Connections upgraded to WebSocket.
    pub accepted: u64,
    /// Handshakes refused, by HTTP status.
    pub refused: Vec<(u16, u64)>,
    pub connections_open: u64,
    pub rooms_open: u64,
    pub handshakes_pending: u64,
    /// SIGHUP reloads applied, and refused (the file did not validate).
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last reload was refused, and none has succeeded since: the file on disk is not the
    /// config in force. Cleared by the next good reload.
    pub last_reload_failed: bool,
    /// The running config's `max_connections`, so an alert can compare the open count with it.
    pub max_connections: u64,
    /// The API thread's counters, when `[api]` is configured.
    pub api: Option<std::sync::Arc<ApiCounters>>,
}

impl AcceptorCounts {
    pub fn refused(&mut self, status: u16) {
        match self.refused.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => {
                self.refused.push((status, 1));
                self.refused.sort();
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition (format 0.0.4) of everything.
pub fn render(acceptor: &AcceptorCounts, workers: &[std::sync::Arc<WorkerCounters>]) -> String {
    let mut sum = Tally::default();
    let (mut kept_messages, mut kept_bytes) = (0, 0);
    for w in workers {
        kept_messages += w.kept_messages.load(Relaxed);
        kept_bytes += w.kept_bytes.load(Relaxed);
        let s = w.snapshot();
        sum.messages_in += s.messages_in;
        sum.frames_out += s.frames_out;
        sum.bytes_in += s.bytes_in;
        sum.bytes_out += s.bytes_out;
        sum.reads_paused += s.reads_paused;
        sum.deflate_calls += s.deflate_calls;
        sum.deflate_bytes_in += s.deflate_bytes_in;
        sum.deflate_bytes_out += s.deflate_bytes_out;
        sum.frames_out_compressed += s.frames_out_compressed;
        sum.messages_replayed += s.messages_replayed;
        sum.resumes_recovered += s.resumes_recovered;
        sum.resumes_unrecovered += s.resumes_unrecovered;
        sum.presence_sent += s.presence_sent;
        sum.presence_coalesced += s.presence_coalesced;
        for (a, b) in sum.closed.iter_mut().zip(s.closed) {
            *a += b;
        }
    }
    let mut o = String::with_capacity(4096);
    family(&mut o, "wsrelay_build_info", "gauge", "Build information.");
    let _ = writeln!(
        o,
        "wsrelay_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let gauges = [
        (
            "wsrelay_connections_open",
            "WebSocket connections open now.",
            acceptor.connections_open,
        ),
        (
            "wsrelay_rooms_open",
            "Rooms with members now.",
            acceptor.rooms_open,
        ),
        (
            "wsrelay_handshakes_pending",
            "TCP connections whose upgrade request is not complete yet.",
            acceptor.handshakes_pending,
        ),
        (
            "wsrelay_max_connections",
            "The configured max_connections: past it, new clients get HTTP 503.",
            acceptor.max_connections,
        ),
        (
            "wsrelay_config_last_reload_successful",
            "1 unless the last reload (SIGHUP) was refused and none has succeeded since.",
            u64::from(!acceptor.last_reload_failed),
        ),
        (
            "wsrelay_history_messages",
            "Messages kept for replay and resume (history_size), all rooms.",
            kept_messages,
        ),
        (
            "wsrelay_history_bytes",
            "Bytes of kept messages, all rooms (capped by history_memory).",
            kept_bytes,
        ),
    ];
    for (name, help, v) in gauges {
        family(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    let counters = [
        (
            "wsrelay_connections_accepted_total",
            "Connections upgraded to WebSocket.",
            acceptor.accepted,
        ),
        (
            "wsrelay_messages_received_total",
            "Messages received from clients.",
            sum.messages_in,
        ),
        (
            "wsrelay_frames_delivered_total",
            "Message frames queued to recipients.",
            sum.frames_out,
        ),
        (
            "wsrelay_frames_delivered_compressed_total",
            "Of the message frames queued to recipients, those sent compressed (permessage-deflate).",
            sum.frames_out_compressed,
        ),
        (
            "wsrelay_deflate_messages_total",
            "Messages compressed: once per message, whatever the number of recipients.",
            sum.deflate_calls,
        ),
        (
            "wsrelay_deflate_input_bytes_total",
            "Message bytes given to deflate.",
            sum.deflate_bytes_in,
        ),
        (
            "wsrelay_deflate_output_bytes_total",
            "Compressed bytes deflate made of them.",
            sum.deflate_bytes_out,
        ),
        (
            "wsrelay_received_bytes_total",
            "Bytes read from WebSocket connections.",
            sum.bytes_in,
        ),
        (
            "wsrelay_sent_bytes_total",
            "Bytes written to WebSocket connections.",
            sum.bytes_out,
        ),
        (
            "wsrelay_publishers_paused_total",
            "Times a publisher stopped being read until other threads took its messages (flow control).",
            sum.reads_paused,
        ),
        (
            "wsrelay_messages_replayed_total",
            "Kept messages replayed to members that asked (?last=, ?since=).",
            sum.messages_replayed,
        ),
        (
            "wsrelay_presence_events_total",
            "Presence events (join, leave, member counts) handed to rooms' v1 members.",
            sum.presence_sent,
        ),
        (
            "wsrelay_presence_events_coalesced_total",
            "Presence events dropped past a room's presence_max_events_per_second (a member count is sent instead).",
            sum.presence_coalesced,
        ),
        (
            "wsrelay_slow_consumer_disconnects_total",
            "Clients closed because their send queue passed send_queue_limit.",
            sum.closed[CloseReason::SlowConsumer as usize],
        ),
    ];
    for (name, help, v) in counters {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        &mut o,
        "wsrelay_connections_closed_total",
        "counter",
        "WebSocket connections closed, by reason.",
    );
    for r in CloseReason::ALL {
        let _ = writeln!(
            o,
            "wsrelay_connections_closed_total{{reason=\"{}\"}} {}",
            r.label(),
            sum.closed[r as usize]
        );
    }
    family(
        &mut o,
        "wsrelay_handshakes_refused_total",
        "counter",
        "Requests answered with an HTTP error instead of an upgrade, by status.",
    );
    for (status, n) in &acceptor.refused {
        let _ = writeln!(
            o,
            "wsrelay_handshakes_refused_total{{status=\"{status}\"}} {n}"
        );
    }
    family(
        &mut o,
        "wsrelay_resumes_total",
        "counter",
        "Members that asked to resume (since/epoch), by outcome: recovered (got every message they \
         missed) or unrecovered (got none, told recovered:false).",
    );
    let _ = writeln!(
        o,
        "wsrelay_resumes_total{{outcome=\"recovered\"}} {}\nwsrelay_resumes_total{{outcome=\"unrecovered\"}} {}",
        sum.resumes_recovered, sum.resumes_unrecovered
    );
    family(
        &mut o,
        "wsrelay_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by result.",
    );
    let _ = writeln!(
        o,
        "wsrelay_config_reloads_total{{result=\"ok\"}} {}\nwsrelay_config_reloads_total{{result=\"failed\"}} {}",
        acceptor.reloads_ok, acceptor.reloads_failed
    );
    if let Some(api) = &acceptor.api {
        api.render(&mut o);
    }
    o
}

/// An endpoint of the server-side API: the `endpoint` label of `wsrelay_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEndpoint {
    Publish,
    Batch,
    Rooms,
    Room,
    History,
    Presence,
    Disconnect,
    /// No endpoint: an unknown path, or a request too broken to tell.
    Unknown,
}

impl ApiEndpoint {
    pub const ALL: [ApiEndpoint; 8] = [
        ApiEndpoint::Publish,
        ApiEndpoint::Batch,
        ApiEndpoint::Rooms,
        ApiEndpoint::Room,
        ApiEndpoint::History,
        ApiEndpoint::Presence,
        ApiEndpoint::Disconnect,
        ApiEndpoint::Unknown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ApiEndpoint::Publish => "publish",
            ApiEndpoint::Batch => "batch",
            ApiEndpoint::Rooms => "rooms",
            ApiEndpoint::Room => "room",
            ApiEndpoint::History => "history",
            ApiEndpoint::Presence => "presence",
            ApiEndpoint::Disconnect => "disconnect",
            ApiEndpoint::Unknown => "unknown",
        }
    }
}

/// HTTP statuses 100..=599, one counter each per endpoint.
const API_STATUSES: usize = 500;

/// The API thread's counters, read when `/metrics` is rendered. Updated once per request (the
/// API is not the hot path of fan-out).
#[derive(Debug)]
pub struct ApiCounters {
    /// By endpoint, then status - 100.
    requests: Box<[AtomicU64]>,
    published: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
}

impl Default for ApiCounters {
    fn default() -> Self {
        ApiCounters {
            requests: (0..ApiEndpoint::ALL.len() * API_STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            published: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
        }
    }
}

impl ApiCounters {
    /// A request to `endpoint` was answered with `status`.
    pub fn request(&self, endpoint: ApiEndpoint, status: u16) {
        let s = usize::from(status.clamp(100, 599)) - 100;
        self.requests[endpoint as usize * API_STATUSES + s].fetch_add(1, Relaxed);
    }

    /// Messages the API put into rooms (sequenced by their owner).
    pub fn published(&self, n: u64) {
        self.published.fetch_add(n, Relaxed);
    }

    pub fn set_connections_open(&self, n: usize) {
        self.connections_open.store(n as u64, Relaxed);
    }

    /// A connection closed at accept: `[api] max_connections` were open.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    fn render(&self, o: &mut String) {
        family(
            o,
            "wsrelay_api_requests_total",
            "counter",
            "Server-side API requests answered, by endpoint and HTTP status.",
        );
        for e in ApiEndpoint::ALL {
            for s in 0..API_STATUSES {
                let n = self.requests[e as usize * API_STATUSES + s].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        o,
                        "wsrelay_api_requests_total{{endpoint=\"{}\",status=\"{}\"}} {n}",
                        e.label(),
                        s + 100
                    );
                }
            }
        }
        let counters = [
            (
                "wsrelay_api_messages_published_total",
                "Messages the server-side API put into rooms (publish and batch).",
                self.published.load(Relaxed),
            ),
            (
                "wsrelay_api_connections_refused_total",
                "API connections closed at accept: [api] max_connections were open.",
                self.connections_refused.load(Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            family(o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        family(
            o,
            "wsrelay_api_connections_open",
            "gauge",
            "Connections to the server-side API open now.",
        );
        let _ = writeln!(
            o,
            "wsrelay_api_connections_open {}",
            self.connections_open.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(body: &'a str, name: &str) -> Option<&'a str> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn the_last_reload_gauge_follows_the_last_result() {
        let mut counts = AcceptorCounts {
            max_connections: 100_000,
            ..AcceptorCounts::default()
        };
        let body = render(&counts, &[]);
        assert_eq!(sample(&body, "wsrelay_max_connections"), Some("100000"));
        assert_eq!(
            sample(&body, "wsrelay_config_last_reload_successful"),
            Some("1"),
            "a daemon that never reloaded runs the file it started with"
        );
        counts.last_reload_failed = true;
        let body = render(&counts, &[]);
        assert_eq!(
            sample(&body, "wsrelay_config_last_reload_successful"),
            Some("0")
        );
        assert!(body.contains("# TYPE wsrelay_config_last_reload_successful gauge\n"));
    }

    #[test]
    fn api_counters_render_only_with_an_api() {
        let mut counts = AcceptorCounts::default();
        assert!(!render(&counts, &[]).contains("wsrelay_api_"));
        let api = std::sync::Arc::new(ApiCounters::default());
        api.request(ApiEndpoint::Publish, 200);
        api.request(ApiEndpoint::Publish, 200);
        api.request(ApiEndpoint::Unknown, 401);
        api.published(2);
        counts.api = Some(api);
        let body = render(&counts, &[]);
        assert_eq!(
            sample(
                &body,
                "wsrelay_api_requests_total{endpoint=\"publish\",status=\"200\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &body,
                "wsrelay_api_requests_total{endpoint=\"unknown\",status=\"401\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&body, "wsrelay_api_messages_published_total"),
            Some("2")
        );
        assert_eq!(sample(&body, "wsrelay_api_connections_open"), Some("0"));
    }
}
