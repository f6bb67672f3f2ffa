//! HS256 tokens for the tests, minted as the service that logs users in would.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and these claims (JSON), signed with `key`.
pub fn sign(header: &str, claims: &str, key: &[u8]) -> String {
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

/// A good token signed with `secret`, valid for an hour, with `extra` claims (JSON members after
/// a comma).
pub fn token(secret: &str, extra: &str) -> String {
    let claims = format!(r#"{{"exp":{}{extra}}}"#, now() + 3600);
    sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, secret.as_bytes())
}
