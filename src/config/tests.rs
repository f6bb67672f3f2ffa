//! The config as a whole: defaults, every key, routing, `[auth]`, loading, the shipped example.
//! The error messages for each kind of mistake are in `error_tests.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::validate::line_col;
use super::*;

pub(super) fn ok(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
}

/// The error as `Display` shows it: `LINE:COL: message`.
pub(super) fn err(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(config) => panic!("accepted:\n{text}\n--- as ---\n{config:?}"),
        Err(e) => e.to_string(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn an_empty_file_gets_every_server_default_and_no_rooms() {
    let config = ok("");
    let s = &config.server;
    assert_eq!(
        s.listen,
        vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(s.workers, cores());
    assert_eq!(s.max_connections, 100_000);
    assert_eq!(s.max_connections_per_ip, 0);
    assert_eq!(s.handshake_timeout, Duration::from_secs(5));
    assert_eq!(s.ping_interval, Duration::from_secs(25));
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.close_timeout, Duration::from_secs(5));
    assert_eq!(s.max_message_size, 64 * 1024);
    assert_eq!(s.max_header_size, 8 * 1024);
    assert_eq!(s.send_queue_limit, 1024 * 1024);
    assert_eq!(s.shutdown_grace, Duration::from_secs(10));
    assert_eq!(s.trusted_proxies, vec![net("127.0.0.1/32"), net("::1/128")]);
    assert!(!s.demo_page);
    assert_eq!(*s, ServerConfig::default());
    assert_eq!(config.rooms, vec![]);
    assert_eq!(config.route("/"), None);
    assert_eq!(config.auth, None);
    assert_eq!(ok("[server]\n").server, ServerConfig::default());
}

#[test]
fn a_room_gets_every_room_default() {
    let config = ok("[server]\nmax_message_size = \"256KiB\"\n[[room]]\npath = \"/chat\"\n");
    let expected = RoomConfig {
        path: "/chat".into(),
        pattern: false,
        subprotocols: vec![],
        max_members: 0,
        echo: true,
        allowed_origins: vec![],
        max_message_size: 256 * 1024, // the server's
        max_messages_per_second: 0,
        auth: RoomAuth::None,
        compression: false,
        compression_min_size: 128,
        history_size: 0,
        history_ttl: Duration::from_secs(3600),
        presence: false,
        presence_max_events_per_second: 50,
    };
    assert_eq!(config.rooms, vec![expected]);
}

#[test]
fn every_key_can_be_set() {
    let config = ok(r#"
        [server]
        listen = ["0.0.0.0:9000", "[::]:9000"]
        workers = 3
        max_connections = 50
        max_connections_per_ip = 4
        handshake_timeout = "250ms"
        ping_interval = "2m"
        idle_timeout = "1h"
        close_timeout = "1s"
        max_message_size = 1000
        max_header_size = "16KB"
        send_queue_limit = "2MiB"
        shutdown_grace = "0s"
        trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
        demo_page = true

        [[room]]
        path = "/rooms/*"
        subprotocols = ["v2.json", "v1"]
        max_members = 2
        echo = false
        allowed_origins = ["https://example.com", "http://localhost:3000", "http://[::1]:8080"]
        max_message_size = "500KB"
        max_messages_per_second = 20
        auth = "jwt"
        compression = true
        compression_min_size = "1KiB"
        history_size = 500
        history_ttl = "10m"
        presence = true
        presence_max_events_per_second = 5

        [auth]
        jwt_secret = "0123456789abcdef0123456789abcdef"
    "#);
    let s = &config.server;
    assert_eq!(
        s.listen,
        vec![
            "0.0.0.0:9000".parse().unwrap(),
            "[::]:9000".parse::<SocketAddr>().unwrap()
        ]
    );
    assert_eq!(
        (s.workers, s.max_connections, s.max_connections_per_ip),
        (3, 50, 4)
    );
    assert_eq!(s.handshake_timeout, Duration::from_millis(250));
    assert_eq!(s.ping_interval, Duration::from_secs(120));
    assert_eq!(s.idle_timeout, Duration::from_secs(3600));
    assert_eq!(s.close_timeout, Duration::from_secs(1));
    assert_eq!(
        (s.max_message_size, s.max_header_size, s.send_queue_limit),
        (1000, 16_000, 2 << 20)
    );
    assert_eq!(s.shutdown_grace, Duration::ZERO);
    assert_eq!(
        s.trusted_proxies,
        vec![net("10.0.0.0/8"), net("fd00::/8"), net("192.0.2.7/32")]
    );
    assert!(s.demo_page);
    let room = &config.rooms[0];
    assert!(room.pattern);
    assert_eq!(room.subprotocols, ["v2.json", "v1"]);
    assert_eq!(
        (room.max_members, room.echo, room.max_message_size),
        (2, false, 500_000)
    );
    assert_eq!(
        (room.max_messages_per_second, room.auth),
        (20, RoomAuth::Jwt)
    );
    assert_eq!((room.compression, room.compression_min_size), (true, 1024));
    assert_eq!(
        (room.history_size, room.history_ttl),
        (500, Duration::from_secs(600))
    );
    assert_eq!(
        (room.presence, room.presence_max_events_per_second),
        (true, 5)
    );
    assert_eq!(
        config.auth.unwrap().jwt_secret.expose(),
        b"0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        room.allowed_origins,
        [
            "https://example.com",
            "http://localhost:3000",
            "http://[::1]:8080"
        ]
    );
    assert_eq!(ok("[server]\nworkers = 0").server.workers, cores());
    assert_eq!(ok("[server]\nworkers = 1024").server.workers, 1024);
    assert_eq!(
        ok("[server]\nlisten = \"[::1]:0\"").server.listen,
        vec!["[::1]:0".parse().unwrap()]
    );
    assert_eq!(
        ok("[server]\ntrusted_proxies = []").server.trusted_proxies,
        vec![]
    );
}

#[test]
fn the_builtin_default_makes_every_path_a_room() {
    let config = Config::builtin_default();
    assert_eq!(
        config.server,
        ServerConfig {
            demo_page: true,
            ..ok("").server
        }
    );
    assert_eq!(config.rooms.len(), 1);
    let room = &config.rooms[0];
    assert_eq!(
        (room.path.as_str(), room.pattern, room.echo),
        ("/*", true, true)
    );
    assert!(room.subprotocols.is_empty() && room.allowed_origins.is_empty());
    assert_eq!((room.max_members, room.max_message_size), (0, 64 * 1024));
    assert!(room.compression, "browsers get compression out of the box");
    assert_eq!(room.compression_min_size, DEFAULT_COMPRESSION_MIN_SIZE);
    for path in ["/", "/chat", "/a/b/c"] {
        assert_eq!(
            config.route(path).map(|r| r.path.as_str()),
            Some("/*"),
            "{path}"
        );
    }
    assert_eq!(config.route(""), None);
}

#[test]
fn route_prefers_the_exact_path_then_the_longest_pattern() {
    let config = ok(r#"
        [[room]]
        path = "/*"
        [[room]]
        path = "/rooms/*"
        [[room]]
        path = "/rooms/vip/*"
        [[room]]
        path = "/rooms/lobby"
        [[room]]
        path = "/chat"
    "#);
    let route = |p: &str| config.route(p).map(|r| r.path.as_str());
    assert_eq!(route("/chat"), Some("/chat"));
    assert_eq!(route("/rooms/lobby"), Some("/rooms/lobby"));
    assert_eq!(route("/rooms/lobby/x"), Some("/rooms/*"));
    assert_eq!(route("/rooms/a"), Some("/rooms/*"));
    assert_eq!(route("/rooms/a/b"), Some("/rooms/*"));
    assert_eq!(route("/rooms/"), Some("/rooms/*"));
    assert_eq!(route("/rooms/vip/x"), Some("/rooms/vip/*"));
    assert_eq!(route("/rooms/vip"), Some("/rooms/*"));
    assert_eq!(route("/rooms"), Some("/*"));
    assert_eq!(route("/roomsx"), Some("/*"));
    assert_eq!(route("/chat/"), Some("/*"));
    assert_eq!(route("/"), Some("/*"));
    assert_eq!(route("chat"), None);

    let narrow = ok("[[room]]\npath = \"/rooms/*\"\n[[room]]\npath = \"/chat\"\n");
    for path in ["/rooms", "/roomsx", "/", "/chat/x", "/Chat"] {
        assert_eq!(narrow.route(path), None, "{path}");
    }
}

#[test]
fn errors_show_the_path_and_position_they_know() {
    let at = |path: Option<&str>, position| ConfigError {
        path: path.map(PathBuf::from),
        position,
        message: "bad".into(),
    };
    assert_eq!(
        at(Some("/etc/wsrelay.toml"), Some((3, 7))).to_string(),
        "/etc/wsrelay.toml:3:7: bad"
    );
    assert_eq!(
        at(Some("/etc/wsrelay.toml"), None).to_string(),
        "/etc/wsrelay.toml: bad"
    );
    assert_eq!(at(None, Some((3, 7))).to_string(), "3:7: bad");
    assert_eq!(at(None, None).to_string(), "bad");

    let e = Config::from_toml("# é\n[server]\n  demo_page = \"ü\" # é\n").unwrap_err();
    assert_eq!(
        (e.position(), e.path()),
        (Some((3, 15)), None),
        "columns count characters"
    );
    assert_eq!(
        e.message(),
        "invalid type: string \"ü\", expected a boolean"
    );
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 3), (2, 1));
    assert_eq!(line_col("ab\ncd", 5), (2, 3));
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("wsrelay-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[[room]]\npath = \"/chat\"\n").unwrap();
    assert_eq!(Config::load(&good).unwrap().rooms[0].path, "/chat");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_connections = 0\n").unwrap();
    let e = Config::load(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:19: max_connections must be at least 1", bad.display())
    );

    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.position(), None);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const SHIPPED: &str = include_str!("../../config/wsrelay.toml");

#[test]
fn the_shipped_example_parses_and_routes() {
    let config = ok(SHIPPED);
    assert_eq!(
        config.server,
        ServerConfig::default(),
        "the example shows the defaults"
    );
    assert_eq!(config.auth, None, "the example's [auth] is commented out");
    assert_eq!(config.api, None, "the example's [api] is commented out");
    assert!(config.rooms.iter().all(|r| r.auth == RoomAuth::None));
    let chat = config.route("/chat").unwrap();
    assert_eq!((chat.path.as_str(), chat.pattern), ("/chat", false));
    assert_eq!(chat.subprotocols, ["chat", "superchat"]);
    assert!(chat.echo && chat.allowed_origins.is_empty());
    let pattern = config.route("/rooms/x").unwrap();
    assert_eq!((pattern.path.as_str(), pattern.pattern), ("/rooms/*", true));
    assert_eq!(config.route("/rooms"), None);
    assert_eq!(config.route("/other"), None);
}

#[test]
fn the_shipped_example_documents_every_key() {
    // serde lists every field of a table in its unknown-field message.
    let keys = |table: &str| {
        let message = err(&format!("{table}\nno_such_key = 1\n"));
        let list = message.split_once("expected ").unwrap().1.to_owned();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let documented = |key: &str| {
        SHIPPED
            .lines()
            .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")))
    };
    let (server, room) = (keys("[server]"), keys("[[room]]\npath = \"/x\""));
    let auth = keys("[auth]");
    let api = keys("[api]");
    assert_eq!((server.len(), room.len(), auth.len()), (16, 14, 2));
    assert_eq!(api.len(), 4);
    for key in server.into_iter().chain(room).chain(auth).chain(api) {
        assert!(
            documented(&key),
            "config/wsrelay.toml does not show `{key}`"
        );
    }
}

#[test]
fn size_keys_take_every_unit() {
    assert_eq!(
        ok("[server]\nsend_queue_limit = \"1MB\"")
            .server
            .send_queue_limit,
        1_000_000
    );
    assert_eq!(
        ok("[server]\nmax_message_size = \"1GiB\"\nsend_queue_limit = \"4GiB\"")
            .server
            .max_message_size,
        1 << 30
    );
    assert_eq!(
        ok("[server]\nmax_header_size = 512").server.max_header_size,
        512
    );
    assert_eq!(
        ok("[server]\nmax_header_size = \"1MiB\"")
            .server
            .max_header_size,
        1 << 20
    );
}

// ---------------------------------------------------------------------------------------------
// [auth] and room auth

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "wsrelay-config-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn secret_of(config: &Config) -> &[u8] {
    config.auth.as_ref().expect("[auth]").jwt_secret.expose()
}

fn file_form(path: &Path) -> String {
    format!(
        "[auth]\njwt_secret_file = {:?}\n",
        path.display().to_string()
    )
}

#[test]
fn the_secret_comes_inline_or_from_a_file() {
    let inline = ok(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"));
    assert_eq!(secret_of(&inline), SECRET.as_bytes());

    let dir = TempDir::new("secret");
    // One trailing newline (LF or CRLF) goes, as `echo` and editors add it; the rest stays.
    for (contents, key) in [
        (format!("{SECRET}\n"), SECRET.to_owned()),
        (format!("{SECRET}\r\n"), SECRET.to_owned()),
        (SECRET.to_owned(), SECRET.to_owned()),
        (format!("{SECRET}\n\n"), format!("{SECRET}\n")),
        (format!(" {SECRET} \n"), format!(" {SECRET} ")),
    ] {
        let path = dir.file("key", contents.as_bytes());
        assert_eq!(
            secret_of(&ok(&file_form(&path))),
            key.as_bytes(),
            "{contents:?}"
        );
    }
    // Binary keys are fine (systemd-creds can hold any bytes).
    let binary: Vec<u8> = (0..=255u8).collect();
    let path = dir.file("binary", &binary);
    assert_eq!(secret_of(&ok(&file_form(&path))), &binary[..]);
}

#[test]
fn a_relative_secret_file_is_found_beside_the_config_file() {
    let dir = TempDir::new("relative");
    dir.file("jwt.key", format!("{SECRET}\n").as_bytes());
    let config = dir.file(
        "wsrelay.toml",
        b"[auth]\njwt_secret_file = \"jwt.key\"\n[[room]]\npath = \"/p\"\nauth = \"jwt\"\n",
    );
    let loaded = Config::load(&config).unwrap();
    assert_eq!(secret_of(&loaded), SECRET.as_bytes());
    assert_eq!(loaded.rooms[0].auth, RoomAuth::Jwt);
}

#[test]
fn the_secret_is_never_shown_by_debug() {
    let config = ok(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"));
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("Secret(32 bytes)"), "{shown}");
}

#[test]
fn auth_mistakes_are_reported_where_they_are() {
    assert_eq!(
        err("[auth]\n"),
        "1:1: [auth] needs jwt_secret or jwt_secret_file (the HS256 key for tokens)"
    );
    assert_eq!(
        err(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\njwt_secret_file = \"/k\"\n"
        )),
        "3:19: [auth]: set jwt_secret or jwt_secret_file, not both"
    );
    let short = "the secret is 31 bytes; HS256 needs at least 32 (make one with e.g. \
                 `openssl rand -base64 32`)";
    assert_eq!(
        err(&format!("[auth]\njwt_secret = \"{}\"\n", &SECRET[1..])),
        format!("2:14: jwt_secret: {short}")
    );
    assert_eq!(
        err("[auth]\njwt_secret = \"\"\n"),
        "2:14: jwt_secret: the secret is 0 bytes; HS256 needs at least 32 (make one with e.g. \
         `openssl rand -base64 32`)"
    );
    assert_eq!(
        err("[auth]\njwt_secret = 5\n"),
        "2:14: invalid type: integer `5`, expected a string"
    );
    assert!(
        err("[auth]\njwt_key = \"x\"\n").starts_with("2:1: unknown field `jwt_key`"),
        "unknown keys are errors"
    );

    let dir = TempDir::new("bad-secret");
    let path = dir.file("short", format!("{}\n", &SECRET[1..]).as_bytes());
    let shown = format!("{:?}", path.display().to_string());
    assert_eq!(
        err(&format!("\n{}", file_form(&path))),
        format!("3:19: jwt_secret_file {shown}: {short}"),
        "the newline is trimmed before the length is checked"
    );
    let missing = dir.0.join("missing");
    assert!(
        err(&file_form(&missing)).starts_with(&format!(
            "2:19: jwt_secret_file {:?}: cannot read: ",
            missing.display().to_string()
        )),
        "{}",
        err(&file_form(&missing))
    );
    assert_eq!(
        err(&file_form(&dir.0)),
        format!(
            "2:19: jwt_secret_file {:?} is not a regular file",
            dir.0.display().to_string()
        )
    );
    let big = dir.file("big", &vec![b'k'; JWT_SECRET_FILE_CEILING + 1]);
    assert_eq!(
        err(&file_form(&big)),
        format!(
            "2:19: jwt_secret_file {:?} is larger than 64KiB: not a key file",
            big.display().to_string()
        )
    );
    let at_ceiling = dir.file("ceiling", &vec![b'k'; JWT_SECRET_FILE_CEILING]);
    assert_eq!(
        secret_of(&ok(&file_form(&at_ceiling))).len(),
        JWT_SECRET_FILE_CEILING
    );
    assert_eq!(
        err(&file_form(Path::new("/dev/zero"))),
        "2:19: jwt_secret_file \"/dev/zero\" is not a regular file"
    );
}

#[test]
fn a_jwt_room_needs_the_secret() {
    let room = "[[room]]\npath = \"/vip\"\nauth = \"jwt\"\n";
    assert_eq!(
        err(room),
        "3:8: room \"/vip\": auth = \"jwt\" needs the key to check tokens with: add an [auth] \
         table with jwt_secret or jwt_secret_file"
    );
    let with_key = ok(&format!("{room}[auth]\njwt_secret = \"{SECRET}\"\n"));
    assert_eq!(with_key.rooms[0].auth, RoomAuth::Jwt);
    assert_eq!(
        ok("[[room]]\npath = \"/open\"\nauth = \"none\"\n").rooms[0].auth,
        RoomAuth::None
    );
    assert_eq!(
        err("[[room]]\npath = \"/x\"\nauth = \"JWT\"\n"),
        "3:8: unknown variant `JWT`, expected `none` or `jwt`"
    );
    assert_eq!(
        err("[[room]]\npath = \"/x\"\nauth = true\n"),
        "3:8: wanted string or table"
    );
    // A key with no room using it is fine: rooms can be switched to jwt by a reload.
    assert!(
        ok(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"))
            .auth
            .is_some()
    );
}

#[test]
fn cluster_table() {
    let c = ok("[cluster]\nredis = \"redis://127.0.0.1:6390\"\n");
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.redis, ("127.0.0.1".to_owned(), 6390));
    assert_eq!(cl.prefix, "wsrelay");
    assert_eq!(cl.name, "");
    let c = ok("[cluster]\nredis = \"redis://[::1]\"\nname = \"a\"\nprefix = \"p\"\n");
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.redis, ("::1".to_owned(), 6379));
    assert_eq!((cl.name.as_str(), cl.prefix.as_str()), ("a", "p"));
    assert!(ok("").cluster.is_none());
}

#[test]
fn cluster_one_url_is_one_shard() {
    let cl = ok("[cluster]\nredis = \"redis://r1:7000\"\n")
        .cluster
        .expect("cluster");
    let one = RedisShard {
        url: "redis://r1:7000".to_owned(),
        addr: ("r1".to_owned(), 7000),
    };
    assert_eq!(cl.shards, vec![one]);
    assert_eq!(cl.for_shard(0), cl);
}

#[test]
fn cluster_redis_list_is_the_shards_in_file_order() {
    let text = "[cluster]\nredis = [\"redis://b:6380\", \"redis://a\", \"redis://[::1]:7\"]\n";
    let cl = ok(text).cluster.expect("cluster");
    let urls: Vec<&str> = cl.shards.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, ["redis://b:6380", "redis://a", "redis://[::1]:7"]);
    let addrs: Vec<(&str, u16)> = cl
        .shards
        .iter()
        .map(|s| (s.addr.0.as_str(), s.addr.1))
        .collect();
    assert_eq!(addrs, [("b", 6380), ("a", 6379), ("::1", 7)]);
    // The Redis thread of shard 1 sees shard 1's address; the rest is shared.
    let second = cl.for_shard(1);
    assert_eq!(second.redis_url, "redis://a");
    assert_eq!(second.redis, ("a".to_owned(), 6379));
    assert_eq!(
        (second.shards, second.prefix),
        (cl.shards.clone(), cl.prefix.clone())
    );
    // A list of one is the same as the URL alone.
    let single = ok("[cluster]\nredis = [\"redis://a\"]\n")
        .cluster
        .expect("cluster");
    assert_eq!(
        single,
        ok("[cluster]\nredis = \"redis://a\"\n")
            .cluster
            .expect("cluster")
    );
}

#[test]
fn cluster_redis_list_errors_point_at_the_url() {
    // Empty: at the list.
    assert_eq!(
        err("[cluster]\nredis = []\n"),
        "2:9: [cluster] redis: the list is empty; name at least one Redis"
    );
    // A bad URL in the list: at that URL, not at the list.
    assert_eq!(
        err("[cluster]\nredis = [\n  \"redis://a\",\n  \"http://b\",\n]\n"),
        "4:3: [cluster] redis: \"http://b\" is not a redis:// URL"
    );
    assert_eq!(
        err("[cluster]\nredis = [\"redis://a\", \"redis://b:0\"]\n"),
        "2:23: [cluster] redis: \"redis://b:0\": bad port"
    );
    // The same server twice, also when one names the default port or another case.
    assert_eq!(
        err("[cluster]\nredis = [\"redis://a\", \"redis://b\", \"redis://A:6379\"]\n"),
        "2:36: [cluster] redis: \"redis://A:6379\" is the same server as \"redis://a\", \
         listed before it"
    );
    // Not a string nor a list of strings.
    let e = err("[cluster]\nredis = 6379\n");
    assert!(e.starts_with("2:9: "), "{e}");
    assert!(
        e.contains("a URL \"redis://host[:port]\" or a list of them"),
        "{e}"
    );
    let e = err("[cluster]\nredis = [\"redis://a\", 1]\n");
    assert!(e.starts_with("2:"), "{e}");
}

#[test]
fn cluster_errors() {
    for (text, says) in [
        ("[cluster]\n", "needs redis"),
        ("[cluster]\nredis = []\n", "list is empty"),
        (
            "[cluster]\nredis = [\"redis://a\", \"redis://a\"]\n",
            "same server",
        ),
        ("[cluster]\nredis = \"http://a\"\n", "not a redis://"),
        ("[cluster]\nredis = \"redis://:pw@a:1\"\n", "credentials"),
        ("[cluster]\nredis = \"redis://a:0\"\n", "bad port"),
        (
            "[cluster]\nredis = \"redis://a\"\nprefix = \"a b\"\n",
            "no spaces",
        ),
        (
            "[cluster]\nredis = \"redis://a\"\nshards = 2\n",
            "unknown field",
        ),
    ] {
        let e = super::validate::parse(text, None).expect_err(text);
        assert!(e.message().contains(says), "{text}: {}", e.message());
    }
}
