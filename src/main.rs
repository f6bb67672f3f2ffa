//! `wsrelay`: arguments → config → [`wsrelay::server::run`]. Every error becomes an exit code here
//! and nowhere else: 0 served and shut down cleanly (or `--check-config` passed), 1 a bad config
//! or a server that could not start, 2 bad arguments.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use wsrelay::config::Config;
use wsrelay::journal;
use wsrelay::server::ConfigSource;

const USAGE: &str = "\
usage: wsrelay [--config PATH] [--listen ADDR]...
       wsrelay --check-config PATH

Runs the wsrelay WebSocket fan-out relay. A client opening ws://host/<path> joins the room the
path names; every message a member sends is relayed to the room's members, in one order.

options:
  -c, --config PATH        read the TOML config at PATH (default: a built-in config serving
                           every path as a room on 127.0.0.1:8080, echo on)
  -l, --listen ADDR        listen on ADDR (ip:port) instead of the config's addresses;
                           repeat for several; port 0 picks a free port
      --check-config PATH  validate PATH and exit: 0 when valid, 1 with PATH:line:col: message
  -V, --version            print the version
  -h, --help               print this help

Logging goes to stderr; RUST_LOG sets the level (default info), e.g. RUST_LOG=debug.
Under systemd each line starts with its syslog priority (<3> error .. <7> debug), so
journalctl -p warning shows warnings and errors only.
SIGHUP reloads the config file (rooms, limits) without dropping connections.
SIGTERM or SIGINT closes every client with 1001 and exits 0 once they are gone or after
shutdown_grace; a second signal exits at once.
";

enum Command {
    Run {
        config: Option<PathBuf>,
        listen: Vec<SocketAddr>,
    },
    Check(PathBuf),
    Version,
    Help,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut listen = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("config") => config = Some(PathBuf::from(parser.value()?)),
            Short('l') | Long("listen") => listen.push(parser.value()?.parse()?),
            Long("check-config") => return Ok(Command::Check(parser.value()?.into())),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('h') | Long("help") => return Ok(Command::Help),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Command::Run { config, listen })
}

fn init_logging() {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // journald stamps every line with the time and the unit itself; what it needs from us is the
    // level, as a `<N>` prefix it turns into the entry's priority (`journalctl -p`).
    if journal::is_journal(&std::io::stderr()) {
        b.format(|out, record| {
            let msg = journal::prefixed(record.level(), &record.args().to_string());
            writeln!(out, "{msg}")
        });
    }
    b.init();
}

fn main() -> ExitCode {
    let cmd = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsrelay: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("wsrelay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check(path) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                // Run as ExecStartPre=, this is the line `journalctl -p err` must show.
                let msg = e.to_string();
                eprintln!("{}", journal::for_stderr(log::Level::Error, &msg));
                ExitCode::FAILURE
            }
        },
        Command::Run { config, listen } => {
            init_logging();
            let mut cfg = match &config {
                Some(path) => match Config::load(path) {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => Config::builtin_default(),
            };
            let source = config.map(|path| ConfigSource {
                path,
                listen: cfg.server.listen.clone(),
            });
            if !listen.is_empty() {
                cfg.server.listen = listen;
            }
            match wsrelay::server::run(cfg, source) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
