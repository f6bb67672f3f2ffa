//! The config file: `Config::from_toml` on arbitrary UTF-8 never panics, and what it accepts
//! routes every path without panicking and stays within the documented bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::config::{self, Config, RoomAuth};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `jwt_secret_file` is read as the config is validated. Only regular files are read, at
    // most 64 KiB of them, but a few kernel files block a reader (/proc/kmsg): keep the fuzzer
    // away from the pseudo file systems.
    if text.contains("jwt_secret_file")
        && ["proc", "sys", "dev", "run"]
            .iter()
            .any(|d| text.contains(d))
    {
        return;
    }
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let s = &config.server;
    assert!(!s.listen.is_empty() && s.workers >= 1 && s.max_connections >= 1);
    assert!(s.idle_timeout > s.ping_interval);
    assert!(s.max_message_size >= 1 && s.max_message_size <= config::MESSAGE_SIZE_CEILING);
    if let Some(auth) = &config.auth {
        assert!(auth.jwt_secret.expose().len() >= config::JWT_SECRET_FLOOR);
    }
    for room in &config.rooms {
        assert!(room.path.starts_with('/'));
        assert!(room.auth == RoomAuth::None || config.auth.is_some());
        // Every room routes to itself (a pattern through a path under it).
        let probe = match room.path.strip_suffix('*') {
            Some(prefix) if room.pattern => format!("{prefix}x"),
            _ => room.path.clone(),
        };
        assert!(config.route(&probe).is_some(), "{probe} does not route");
    }
    for path in ["/", "/chat", "/rooms/a/b", "", "//", "/x/*"] {
        let _ = config.route(path);
    }
});
