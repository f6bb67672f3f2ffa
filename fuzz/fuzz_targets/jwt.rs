//! Token verification (`wsrelay::auth`). Two halves, picked by the first byte:
//! - arbitrary text as a token (and as the query and `Authorization` it could come in): never a
//!   panic, and never accepted, since the fuzzer does not know the key — an `Ok` is a forgery;
//! - arbitrary bytes as the header or payload of a token signed with the key, so the claim
//!   parsing behind the signature check is reached: never a `BadSignature`.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use wsrelay::auth::{self, Rejection};

const KEY: &[u8] = b"fuzzing-key-fuzzing-key-fuzzing-key";
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let r = auth::verify(&text, KEY, NOW);
            assert!(r.is_err(), "forged token accepted: {text:?}");
            let _ = auth::token_in(Some(&text), Some(&text));
            let _ = auth::admit(Some(&text), None, KEY, NOW, "/chat");
        }
        1 => signed(br#"{"alg":"HS256"}"#, rest),
        _ => {
            let claims = format!(r#"{{"exp":{}}}"#, NOW + 60);
            signed(rest, claims.as_bytes());
        }
    }
});

/// A token with this header and payload, signed with [`KEY`].
fn signed(header: &[u8], payload: &[u8]) {
    let body = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    mac.update(body.as_bytes());
    let token = format!(
        "{body}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    match auth::verify(&token, KEY, NOW) {
        Err(Rejection::BadSignature) => panic!("a correctly signed token failed its signature"),
        Err(Rejection::NotForRoom) => panic!("verify does not know the room"),
        Ok(claims) => {
            for path in ["/", "/chat", "/rooms/a"] {
                let _ = claims.opens(path);
            }
        }
        Err(_) => {}
    }
}
