//! `[api]`: the server-side API's listener, its bearer key (inline or from a file, read like
//! `[auth]`'s `jwt_secret_file`) and its connection cap.

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::raw::RawApi;
use super::validate::{Invalid, at_least_one, key_file};
use super::{API_KEY_FLOOR, ApiConfig, DEFAULT_API_LISTEN, DEFAULT_API_MAX_CONNECTIONS, Secret};

/// `[api]`: exactly one of `key` and `key_file`, a long enough key, a valid address.
pub(super) fn validate_api(
    raw: Spanned<RawApi>,
    base: Option<&Path>,
) -> Result<ApiConfig, Invalid> {
    let table = raw.span();
    let raw = raw.into_inner();
    let listen = match raw.listen {
        None => DEFAULT_API_LISTEN,
        Some(addr) => addr.get_ref().parse::<SocketAddr>().map_err(|_| {
            let message = format!(
                "[api] listen {:?} is not ip:port (e.g. \"127.0.0.1:9001\")",
                addr.get_ref()
            );
            Invalid::new(addr.span(), message)
        })?,
    };
    let (key, span, what) = match (raw.key, raw.key_file) {
        (Some(_), Some(file)) => {
            return Err(Invalid::new(
                file.span(),
                "[api]: set key or key_file, not both",
            ));
        }
        (None, None) => {
            let message = "[api] needs key or key_file (the bearer key API requests carry)";
            return Err(Invalid::new(table, message));
        }
        (Some(inline), None) => {
            let span = inline.span();
            (inline.into_inner().into_bytes(), span, "key".to_owned())
        }
        (None, Some(file)) => key_file("key_file", file, base).map_err(|e| Invalid {
            message: format!("[api] {}", e.message),
            ..e
        })?,
    };
    if key.len() < API_KEY_FLOOR {
        let message = format!(
            "[api] {what}: the key is {} bytes; it must be at least {API_KEY_FLOOR} \
             (make one with e.g. `openssl rand -base64 32`)",
            key.len()
        );
        return Err(Invalid::new(span, message));
    }
    let max_connections = at_least_one(
        "[api] max_connections",
        raw.max_connections,
        DEFAULT_API_MAX_CONNECTIONS,
    )?;
    Ok(ApiConfig {
        listen,
        key: Secret::new(key),
        max_connections,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn no_table_no_api_and_the_defaults() {
        assert_eq!(ok("").api, None);
        let api = ok(&format!("[api]\nkey = \"{KEY}\"\n")).api.unwrap();
        assert_eq!(api.listen, DEFAULT_API_LISTEN);
        assert_eq!(api.key.expose(), KEY.as_bytes());
        assert_eq!(api.max_connections, DEFAULT_API_MAX_CONNECTIONS);
        let api = ok(&format!(
            "[api]\nlisten = \"127.0.0.1:0\"\nkey = \"{KEY}\"\nmax_connections = 3\n"
        ))
        .api
        .unwrap();
        assert_eq!(api.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(api.max_connections, 3);
        assert!(!format!("{api:?}").contains(KEY), "Debug hides the key");
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        assert_eq!(
            err("[api]\n"),
            "1:1: [api] needs key or key_file (the bearer key API requests carry)"
        );
        assert_eq!(
            err(&format!("[api]\nkey = \"{KEY}\"\nkey_file = \"/k\"\n")),
            "3:12: [api]: set key or key_file, not both"
        );
        assert_eq!(
            err("[api]\nkey = \"short\"\n"),
            "2:7: [api] key: the key is 5 bytes; it must be at least 32 (make one with e.g. \
             `openssl rand -base64 32`)"
        );
        assert_eq!(
            err(&format!("[api]\nlisten = \"nowhere\"\nkey = \"{KEY}\"\n")),
            "2:10: [api] listen \"nowhere\" is not ip:port (e.g. \"127.0.0.1:9001\")"
        );
        assert_eq!(
            err(&format!("[api]\nkey = \"{KEY}\"\nmax_connections = 0\n")),
            "3:19: [api] max_connections must be at least 1"
        );
        assert!(err("[api]\nkye = \"x\"\n").starts_with("2:1: unknown field `kye`"));
        let missing = err("[api]\nkey_file = \"/nonexistent/wsrelay-api.key\"\n");
        assert!(
            missing
                .starts_with("2:12: [api] key_file \"/nonexistent/wsrelay-api.key\": cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn a_relative_key_file_is_read_beside_the_config_with_its_newline_trimmed() {
        let dir = std::env::temp_dir().join(format!("wsrelay-api-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("api.key"), format!("{KEY}\n")).unwrap();
        let file = dir.join("wsrelay.toml");
        std::fs::write(&file, "[api]\nkey_file = \"api.key\"\n").unwrap();
        let api = crate::config::Config::load(&file).unwrap().api.unwrap();
        assert_eq!(api.key.expose(), KEY.as_bytes());
        std::fs::write(dir.join("api.key"), "too short\n").unwrap();
        let e = crate::config::Config::load(&file).unwrap_err().to_string();
        assert!(e.contains("2:12: [api] key_file"), "{e}");
        assert!(e.contains("the key is 9 bytes"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
