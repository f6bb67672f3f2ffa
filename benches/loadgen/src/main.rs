//! wsrelay's load generator: drives a WebSocket relay (wsrelay or a peer) on loopback and prints
//! one JSON object per run. See `loadgen --help`; `benches/compare` drives it against every server.

mod api;
mod apipub;
mod conn;
mod hist;
mod hs;
mod http;
mod idle;
mod inflate;
mod json;
mod net;
mod payload;
mod relay;
mod sys;
mod v1;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::Duration;

const HELP: &str = "\
loadgen SCENARIO --addr 127.0.0.1:PORT [options]      one JSON object on stdout

scenarios:
  fanout      S subscribers + P publishers in one room ({prefix}/fanout)
              --subs S (1000) --pubs P (4) --size B (64) --messages M (0: no limit)
              --window W (16, per publisher, in flight until every member has it)
              | --rate D (deliveries per second over all publishers; fixed schedule)
              --payload binary|json (binary: --size bytes; json: 1-2 KiB of market data
              that deflate compresses 3-6x)  --deflate 0|1 (0; 1: every client offers
              permessage-deflate, the server must agree, compressed messages are inflated
              and checked; reports wire and payload bytes per delivery)
              --v1 0|1 (0; 1: every client offers the subprotocol wsrelay.v1, the server
              must choose it; the welcome is checked, the number taken off each message
              before the usual checks, and numbers must be dense: v1_seq_gaps)
  rooms       R rooms x K members, every member publishes ({prefix}/rooms-N)
              --rooms R (1000) --members K (10) --size B (64) --window W (2) | --rate D
              --payload, --deflate, --v1 as for fanout
  idle        C connections held ({prefix}/idle-N, 100 per room); server RSS per connection
              --conns C (19000) --settle SECS (1) --deflate 0|1 (0)
  handshakes  connect + upgrade + close, repeated
              --concurrency N (32)
  api-publish S subscribers in one room ({prefix}/api-publish); P keep-alive connections to
              wsrelay's API publish into it (POST /api/v1/publish/..., octet-stream bodies)
              --api-addr ADDR (the [api] listener) --api-key-file PATH (the bearer key;
              one trailing newline is dropped, as wsrelay does)
              --subs S (1000) --conns P (4) --size B (64) --messages M (0: no limit, else
              per connection) --window W (1: requests in flight per connection; over 1
              they are pipelined) --gate delivered|answered (delivered: a request holds
              its place in the window until every subscriber has the message; answered:
              until its answer, so publishers may outrun the fan-out)

common:
  --addr ADDR           server (loopback IPv4 only); fanout and rooms take a comma-separated
                        list too (nodes of one cluster): connection i goes to the i-th modulo
                        their number, so publisher 0 is on the first
  --server-pid PID      report the server's CPU (from /proc/PID/stat) and RSS/HWM; fanout
                        and rooms take a comma-separated list (a cluster's nodes and its
                        Redis): CPU and memory summed, each one's CPU in server_cpu_s_each
  --label TEXT          copied into the JSON as \"server\"
  --path-prefix P       (/bench)
  --threads T           loader threads for fanout/rooms, subscriber threads for api-publish (2)
  --warmup SECS (1)  --duration SECS (5)  --drain SECS (3)  --setup-timeout SECS (60)
  --sources N           127.0.0.x source addresses to spread connections over (64)
  --connect-concurrency N   handshakes in flight during setup (128)
  --deadline SECS       hard limit for the whole run; default: sum of the above + 30
";

struct Args {
    scenario: String,
    kv: HashMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let scenario = it.next().ok_or("no scenario (see --help)")?;
        if scenario == "--help" || scenario == "-h" {
            print!("{HELP}");
            std::process::exit(0);
        }
        let mut kv = HashMap::new();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument {k:?}"));
            };
            let v = it.next().ok_or(format!("--{name} needs a value"))?;
            kv.insert(name.to_string(), v);
        }
        Ok(Args {
            scenario,
            kv,
            used: Default::default(),
        })
    }

    fn raw(&self, k: &str) -> Option<&String> {
        self.used.borrow_mut().push(k.to_string());
        self.kv.get(k)
    }

    fn get<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.raw(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{k}: cannot parse {v:?}")),
        }
    }

    fn opt<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, String> {
        match self.raw(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{k}: cannot parse {v:?}")),
        }
    }

    fn secs(&self, k: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.get(k, default)?;
        if !(0.0..1e6).contains(&s) {
            return Err(format!("--{k}: out of range"));
        }
        Ok(Duration::from_secs_f64(s))
    }

    fn check_unused(&self) -> Result<(), String> {
        let used = self.used.borrow();
        for k in self.kv.keys() {
            if !used.contains(k) {
                return Err(format!("--{k} does not apply to {}", self.scenario));
            }
        }
        Ok(())
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse()?;
    let nofile = sys::raise_nofile();
    let servers: Vec<SocketAddrV4> = a
        .raw("addr")
        .ok_or("--addr is required")?
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| "--addr must be IPv4 address:port, or a comma-separated list of them")?;
    if servers.iter().any(|s| !s.ip().is_loopback()) {
        return Err("--addr must be a loopback address: load goes to this machine only".into());
    }
    let server = servers[0];
    let server_pids: Vec<u32> = match a.raw("server-pid") {
        None => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--server-pid: cannot parse {v:?}"))?,
    };
    let server_pid = server_pids.first().copied();
    // Several servers (a cluster's nodes) or processes (its nodes and Redis): fanout and rooms.
    if !matches!(a.scenario.as_str(), "fanout" | "rooms")
        && (servers.len() > 1 || server_pids.len() > 1)
    {
        return Err(format!(
            "{}: one --addr and one --server-pid only (several are for fanout and rooms)",
            a.scenario
        ));
    }
    let label: Option<String> = a.opt("label")?;
    let prefix: String = a.get("path-prefix", "/bench".to_string())?;
    let threads: usize = a.get("threads", 2)?;
    let warmup = a.secs("warmup", 1.0)?;
    let duration = a.secs("duration", 5.0)?;
    let drain = a.secs("drain", 3.0)?;
    let setup_timeout = a.secs("setup-timeout", 60.0)?;
    let sources: u32 = a.get("sources", 64)?;
    let concurrency: usize = a.get("connect-concurrency", 128)?;
    let default_deadline = warmup + duration + drain + setup_timeout + Duration::from_secs(30);
    let deadline = a.secs("deadline", default_deadline.as_secs_f64())?;
    // Hard deadline: whatever happens, the run ends.
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        println!(
            "{{\"error\":\"hard deadline of {:.0} s reached\"}}",
            deadline.as_secs_f64()
        );
        std::process::exit(3);
    });

    let mut j = match a.scenario.as_str() {
        "fanout" | "rooms" => {
            let fanout = a.scenario == "fanout";
            let (rooms, members, publishers) = if fanout {
                let subs: usize = a.get("subs", 1000)?;
                let pubs: usize = a.get("pubs", 4)?;
                (1, subs + pubs, pubs)
            } else {
                let k: usize = a.get("members", 10)?;
                (a.get("rooms", 1000)?, k, k)
            };
            let rate: Option<f64> = a.opt("rate")?;
            let window: Option<u32> = a.opt("window")?;
            let window = match (window, rate) {
                (Some(_), Some(_)) => return Err("--window and --rate exclude each other".into()),
                (None, None) => Some(if fanout { 16 } else { 2 }),
                (w, _) => w,
            };
            if window == Some(0) {
                return Err("--window must be at least 1".into());
            }
            let payload = payload::Kind::parse(&a.get("payload", "binary".to_string())?)?;
            if payload == payload::Kind::Json && a.kv.contains_key("size") {
                return Err("--size applies to binary payloads; json ones are 1-2 KiB".into());
            }
            let o = relay::Opts {
                scenario: if fanout { "fanout" } else { "rooms" },
                servers: servers.clone(),
                server_pids: server_pids.clone(),
                path_prefix: prefix,
                rooms,
                members,
                publishers,
                size: a.get("size", 64)?,
                payload,
                deflate: flag(&a, "deflate")?,
                v1: flag(&a, "v1")?,
                window,
                rate,
                messages: a.get("messages", 0)?,
                threads,
                sources,
                concurrency,
                warmup,
                duration,
                drain,
                setup_timeout,
            };
            a.check_unused()?;
            relay::run(&o)?
        }
        "idle" => {
            let o = idle::Opts {
                server,
                server_pid,
                path_prefix: prefix,
                conns: a.get("conns", 19_000)?,
                per_room: 100,
                sources,
                concurrency,
                settle: a.secs("settle", 1.0)?,
                deflate: flag(&a, "deflate")?,
                duration,
                setup_timeout,
            };
            a.check_unused()?;
            let _ = (threads, warmup, drain);
            idle::run(&o)?
        }
        "handshakes" => {
            let o = hs::Opts {
                server,
                server_pid,
                path_prefix: prefix,
                concurrency: a.get("concurrency", 32)?,
                sources,
                warmup,
                duration,
            };
            a.check_unused()?;
            let _ = (threads, drain, setup_timeout);
            hs::run(&o)?
        }
        "api-publish" => {
            let api: SocketAddrV4 = a
                .raw("api-addr")
                .ok_or("--api-addr is required")?
                .parse()
                .map_err(|_| "--api-addr must be an IPv4 address:port")?;
            if !api.ip().is_loopback() {
                return Err("--api-addr must be a loopback address".into());
            }
            let key_file: String = a.opt("api-key-file")?.ok_or("--api-key-file is required")?;
            let o = apipub::Opts {
                server,
                api,
                key: read_key(&key_file)?,
                server_pid,
                path_prefix: prefix,
                subs: a.get("subs", 1000)?,
                conns: a.get("conns", 4)?,
                window: a.get("window", 1)?,
                gate: api::Gate::parse(&a.get("gate", "delivered".to_string())?)?,
                size: a.get("size", 64)?,
                messages: a.get("messages", 0)?,
                threads,
                sources,
                concurrency,
                warmup,
                duration,
                drain,
                setup_timeout,
            };
            a.check_unused()?;
            apipub::run(&o)?
        }
        other => return Err(format!("unknown scenario {other:?} (see --help)")),
    };
    j.opt("nofile_limit", Some(nofile as f64));
    if let Some(l) = label {
        j.str("server", &l);
    }
    println!("{}", j.render());
    Ok(())
}

/// The API's bearer key from `path`, read as wsrelay reads `key_file` (one trailing newline,
/// with its carriage return, is not part of the key).
fn read_key(path: &str) -> Result<Vec<u8>, String> {
    let mut key = std::fs::read(path).map_err(|e| format!("--api-key-file {path:?}: {e}"))?;
    if key.ends_with(b"\n") {
        key.pop();
        if key.ends_with(b"\r") {
            key.pop();
        }
    }
    if key.is_empty() || key.iter().any(|b| b.is_ascii_control() || *b == b' ') {
        return Err(format!(
            "--api-key-file {path:?}: the key must be one line without spaces or control bytes"
        ));
    }
    Ok(key)
}

/// A 0/1 option, off by default.
fn flag(a: &Args, k: &str) -> Result<bool, String> {
    match a.get(k, 0u8)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(format!("--{k} takes 0 or 1")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut j = json::Json::new();
            j.str("error", &e);
            println!("{}", j.render());
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
