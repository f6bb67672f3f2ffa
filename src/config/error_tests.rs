//! Every kind of mistake an operator can make, and the `LINE:COL: message` it gets.

use super::tests::{err, ok};
#[test]
fn syntax_unknown_keys_and_wrong_types_are_reported_where_they_are() {
    let fields = "`listen`, `workers`, `max_connections`, `max_connections_per_ip`, \
                  `handshake_timeout`, `ping_interval`, `idle_timeout`, `close_timeout`, \
                  `max_message_size`, `max_header_size`, `send_queue_limit`, `shutdown_grace`, \
                  `trusted_proxies`, `demo_page`, `colocate_members`, `history_memory`";
    assert_eq!(
        err("[server]\nworkrs = 1\n"),
        format!("2:1: unknown field `workrs`, expected one of {fields}")
    );
    assert_eq!(
        err("[[room]]\npath = \"/chat\"\nehco = true\n"),
        "3:1: unknown field `ehco`, expected one of `path`, `subprotocols`, `max_members`, `echo`, \
         `allowed_origins`, `max_message_size`, `max_messages_per_second`, `auth`, \
         `compression`, `compression_min_size`, `history_size`, `history_ttl`, `presence`, \
         `presence_max_events_per_second`"
    );
    assert_eq!(
        err("[sever]\n"),
        "1:2: unknown field `sever`, expected one of `server`, `auth`, `room`, `cluster`, `api`"
    );
    assert_eq!(err("[server\n"), "1:8: unclosed table, expected `]`");
    assert_eq!(
        err("[server]\nworkers = 1\nworkers = 2\n"),
        "3:1: duplicate key `workers`"
    );
    assert_eq!(
        err("[room]\npath = \"/chat\"\n"),
        "1:1: invalid type: map, expected a sequence"
    );
    assert_eq!(
        err("[server]\nworkers = -1\n"),
        "2:11: invalid value: integer `-1`, expected usize"
    );
    assert_eq!(
        err("[server]\nmax_connections = \"many\"\n"),
        "2:19: invalid type: string \"many\", expected usize"
    );
    assert_eq!(
        err("[server]\ndemo_page = \"yes\"\n"),
        "2:13: invalid type: string \"yes\", expected a boolean"
    );
    assert_eq!(
        err("[server]\nping_interval = 25\n"),
        "2:17: invalid type: integer `25`, expected a duration string with a unit (ms, s, m, h), e.g. \"5s\""
    );
    assert_eq!(
        err("[server]\nmax_message_size = 1.5\n"),
        "2:20: invalid type: floating point `1.5`, expected a size: an integer number of bytes or a \
         string like \"64KiB\""
    );
    assert_eq!(
        err("[server]\nlisten = 8080\n"),
        "2:10: invalid type: integer `8080`, expected an address \"ip:port\" or a list of them"
    );
    assert_eq!(
        err("[server]\nlisten = [\"127.0.0.1:1\", 2]\n"),
        "2:26: invalid type: integer `2`, expected a string"
    );
    assert_eq!(
        err("[[room]]\npath = 5\n"),
        "2:8: invalid type: integer `5`, expected a string"
    );
    assert_eq!(
        err("[[room]]\npath = \"/a\"\necho = 1\n"),
        "3:8: invalid type: integer `1`, expected a boolean"
    );
    assert_eq!(
        err("[[room]]\npath = \"/a\"\nsubprotocols = \"chat\"\n"),
        "3:16: invalid type: string \"chat\", expected a sequence"
    );
}

#[test]
fn server_limits_are_checked() {
    let e = |body: &str| err(&format!("[server]\n{body}\n"));
    assert_eq!(
        e("workers = 1025"),
        "2:11: workers must be at most 1024 (0 means one per CPU core)"
    );
    assert_eq!(
        e("max_connections = 0"),
        "2:19: max_connections must be at least 1"
    );
    assert_eq!(
        e("max_message_size = 0"),
        "2:20: max_message_size must be at least 1 byte"
    );
    assert_eq!(
        e("max_message_size = \"0KiB\""),
        "2:20: max_message_size must be at least 1 byte"
    );
    assert_eq!(
        e("max_message_size = \"2GiB\""),
        "2:20: max_message_size must be at most 1GiB"
    );
    assert_eq!(
        e("max_message_size = 1073741825"),
        "2:20: max_message_size must be at most 1GiB"
    );
    assert_eq!(
        e("send_queue_limit = 0"),
        "2:20: send_queue_limit must be at least 1 byte"
    );
    assert_eq!(
        e("send_queue_limit = \"200KiB\""),
        "2:20: send_queue_limit (204800 bytes) must hold at least 4 messages of max_message_size \
         (65536 bytes), or a reader that keeps up could be cut by one burst: raise \
         send_queue_limit or lower max_message_size"
    );
    assert_eq!(
        e("send_queue_limit = -5"),
        "2:20: send_queue_limit must not be negative"
    );
    assert_eq!(
        e("max_header_size = 511"),
        "2:19: max_header_size must be at least 512 bytes"
    );
    assert_eq!(
        e("max_header_size = \"2MiB\""),
        "2:19: max_header_size must be at most 1MiB"
    );
    assert_eq!(
        e("max_message_size = \"64k\""),
        "2:20: max_message_size: \"64k\" is not a size: write an integer of bytes, optionally followed by \
         B, KiB, MiB, GiB (1024-based) or KB, MB, GB (1000-based), e.g. \"64KiB\""
    );
    assert_eq!(
        e("handshake_timeout = \"0s\""),
        "2:21: handshake_timeout must be greater than 0"
    );
    assert_eq!(
        e("ping_interval = \"0ms\""),
        "2:17: ping_interval must be greater than 0"
    );
    assert_eq!(
        e("close_timeout = \"0s\""),
        "2:17: close_timeout must be greater than 0"
    );
    assert_eq!(
        e("close_timeout = \"5\""),
        "2:17: close_timeout: \"5\" is not a duration: write an integer and a unit, ms, s, m or h \
         (e.g. \"250ms\", \"5s\", \"2m\", \"1h\")"
    );
    assert_eq!(
        e("shutdown_grace = \"9000h\""),
        "2:18: shutdown_grace must be at most 8760h (a year)"
    );
    assert_eq!(
        e("idle_timeout = \"25s\""),
        "2:16: idle_timeout (25s) must be greater than ping_interval (25s), or a quiet but healthy \
         client is cut before its pong can arrive"
    );
    assert_eq!(
        e("idle_timeout = \"10s\"\nping_interval = \"20s\""),
        "2:16: idle_timeout (10s) must be greater than ping_interval (20s), or a quiet but healthy \
         client is cut before its pong can arrive"
    );
    assert_eq!(
        e("ping_interval = \"90s\""),
        "2:17: idle_timeout (60s) must be greater than ping_interval (90s), or a quiet but healthy \
         client is cut before its pong can arrive"
    );
    assert_eq!(
        e("listen = []"),
        "2:10: listen must name at least one address"
    );
    assert_eq!(
        e("listen = \"localhost:8080\""),
        "2:10: listen address \"localhost:8080\" is not ip:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
    );
    assert_eq!(
        e("listen = [\"0.0.0.0:80\",\n  \"0.0.0.0\"]"),
        "3:3: listen address \"0.0.0.0\" is not ip:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
    );
    assert_eq!(
        e("listen = [\"[::]:80\", \"[::]:80\"]"),
        "2:22: listen address [::]:80 is listed twice"
    );
    assert_eq!(
        e("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
        "2:34: trusted_proxies: \"10.0.0.0/33\": prefix /33 is longer than the 32 bits of the address"
    );
    assert_eq!(
        e("trusted_proxies = [\"::1/129\"]"),
        "2:20: trusted_proxies: \"::1/129\": prefix /129 is longer than the 128 bits of the address"
    );
    assert!(
        e("trusted_proxies = [\"nginx\"]")
            .starts_with("2:20: trusted_proxies: \"nginx\" is not an IP")
    );
}

#[test]
fn room_paths_are_checked() {
    let e = |path: &str| err(&format!("[[room]]\npath = {path}\n"));
    assert_eq!(
        e("\"chat\""),
        "2:8: room path \"chat\" must start with \"/\""
    );
    assert_eq!(e("\"\""), "2:8: room path \"\" must start with \"/\"");
    assert_eq!(e("\"*\""), "2:8: room path \"*\" must start with \"/\"");
    let star = "may contain \"*\" only as a final \"/*\" (a pattern)";
    for path in ["/rooms*", "/*/x", "/a/*/*", "/a*/", "/**"] {
        assert_eq!(
            e(&format!("{path:?}")),
            format!("2:8: room path {path:?} {star}")
        );
    }
    let space = "must not contain whitespace or control characters";
    assert_eq!(e("\"/a b\""), format!("2:8: room path \"/a b\" {space}"));
    assert_eq!(
        e("\"/a\\tb\""),
        format!("2:8: room path \"/a\\tb\" {space}")
    );
    assert_eq!(
        e("\"/a\\u007fb\""),
        format!("2:8: room path \"/a\\u{{7f}}b\" {space}")
    );
    let query = "must not contain \"?\" or \"#\" (a query or fragment is not part of the path)";
    assert_eq!(
        e("\"/chat?x=1\""),
        format!("2:8: room path \"/chat?x=1\" {query}")
    );
    assert_eq!(
        e("\"/chat#top\""),
        format!("2:8: room path \"/chat#top\" {query}")
    );
    assert_eq!(
        err("[[room]]\necho = true\n"),
        "1:1: room has no path (add e.g. path = \"/chat\")"
    );
    assert_eq!(
        err("[[room]]\npath = \"/a\"\n[[room]]\n  echo = false\n"),
        "3:1: room has no path (add e.g. path = \"/chat\")"
    );
    assert_eq!(
        err(
            "[[room]]\npath = \"/chat\"\n\n[[room]]\npath = \"/x/*\"\n\n[[room]]\n\npath = \"/chat\"\n"
        ),
        "9:8: room \"/chat\" is defined twice (first at line 2)"
    );
    assert_eq!(
        err("[[room]]\npath = \"/x/*\"\n[[room]]\npath = \"/x/*\"\n"),
        "4:8: room \"/x/*\" is defined twice (first at line 2)"
    );
    // Not duplicates: a pattern and the exact path of its prefix are different rooms.
    assert_eq!(
        ok("[[room]]\npath = \"/x/*\"\n[[room]]\npath = \"/x/\"\n[[room]]\npath = \"/x\"")
            .rooms
            .len(),
        3
    );
}

#[test]
fn room_keys_are_checked() {
    let e = |body: &str| err(&format!("[[room]]\npath = \"/chat\"\n{body}\n"));
    assert_eq!(
        e("max_message_size = \"512KiB\""),
        "3:20: room \"/chat\": send_queue_limit (1048576 bytes) must hold at least 4 messages of \
         max_message_size (524288 bytes), or a reader that keeps up could be cut by one burst: \
         raise send_queue_limit or lower max_message_size"
    );
    assert_eq!(
        e("max_message_size = 0"),
        "3:20: room \"/chat\": max_message_size must be at least 1 byte"
    );
    assert_eq!(
        e("max_message_size = \"4GiB\""),
        "3:20: room \"/chat\": max_message_size must be at most 1GiB"
    );
    assert_eq!(
        e("history_size = 100001"),
        "3:16: room \"/chat\": history_size must be at most 100000 (kept messages per room)"
    );
    assert_eq!(
        e("history_ttl = \"0s\""),
        "3:15: room \"/chat\": history_ttl must be greater than 0 (use history_size = 0 for no history)"
    );
    assert_eq!(
        e("compression_min_size = -1"),
        "3:24: room \"/chat\": compression_min_size must not be negative"
    );
    assert_eq!(
        e("compression = \"on\""),
        "3:15: invalid type: string \"on\", expected a boolean"
    );
    let token = "is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)";
    assert_eq!(
        e("subprotocols = [\"chat\", \"super chat\"]"),
        format!("3:25: room \"/chat\": subprotocol \"super chat\" {token}")
    );
    assert_eq!(
        e("subprotocols = [\"\"]"),
        format!("3:17: room \"/chat\": subprotocol \"\" {token}")
    );
    assert_eq!(
        e("subprotocols = [\"a,b\"]"),
        format!("3:17: room \"/chat\": subprotocol \"a,b\" {token}")
    );
    assert_eq!(
        e("subprotocols = [\"é\"]"),
        format!("3:17: room \"/chat\": subprotocol \"é\" {token}")
    );
    assert_eq!(
        e("subprotocols = [\"chat\", \"superchat\", \"chat\"]"),
        "3:38: room \"/chat\": subprotocol \"chat\" is listed twice"
    );
    let shape = "is not an origin: write scheme://host[:port], e.g. \"https://example.com\"";
    let slash = "must not have a path or a trailing slash (browsers send scheme://host[:port])";
    let port = "has a port that is not a number from 1 to 65535";
    for (origin, reason) in [
        ("https://example.com/", slash),
        ("https://example.com/app", slash),
        ("https://example.com?x", slash),
        ("example.com", shape),
        ("*", shape),
        ("null", shape),
        ("https://", shape),
        ("://example.com", shape),
        ("1http://example.com", shape),
        ("https://exa mple.com", shape),
        ("https://user@example.com", shape),
        ("http://[::1", shape),
        (
            "https://Example.com",
            "must be lowercase, as browsers send it",
        ),
        (
            "HTTPS://example.com",
            "must be lowercase, as browsers send it",
        ),
        ("https://example.com:", port),
        ("https://example.com:0", port),
        ("https://example.com:65536", port),
        ("https://example.com:+80", port),
    ] {
        assert_eq!(
            e(&format!("allowed_origins = [{origin:?}]")),
            format!("3:20: room \"/chat\": allowed origin {origin:?} {reason}"),
        );
    }
}
