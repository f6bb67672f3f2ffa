//! Tokens are minted here with the same crates (HMAC-SHA256 over `header.payload`), plus one
//! published token made elsewhere, so a bug shared by minting and checking would still show.

use super::*;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;
const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_raw(header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let signed = format!("{}.{}", b64(header), b64(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
}

fn mint(payload: &str) -> String {
    sign_raw(HS256.as_bytes(), payload.as_bytes(), KEY)
}

/// A token valid for an hour from `NOW` with `extra` claims (JSON members, leading comma).
fn valid(extra: &str) -> String {
    mint(&format!(r#"{{"exp":{}{extra}}}"#, NOW + 3600))
}

fn check(token: &str) -> Result<Claims, Rejection> {
    verify(token, KEY, NOW)
}

fn malformed(token: &str) -> &'static str {
    match check(token) {
        Err(Rejection::Malformed(why)) => why,
        other => panic!("{token}: expected Malformed, got {other:?}"),
    }
}

#[test]
fn a_valid_token_gives_its_claims_with_defaults() {
    assert_eq!(
        check(&valid(r#","sub":"alice","iat":1"#)),
        Ok(Claims {
            exp: NOW as i64 + 3600,
            nbf: None,
            rooms: None,
            publish: true,
            sub: Some("alice".into()),
            iat: Some(1),
        })
    );
    let c = check(&valid(
        r#","nbf":1,"rooms":["/chat","/r/*"],"publish":false"#,
    ))
    .unwrap();
    assert_eq!(c.nbf, Some(1));
    assert_eq!(
        c.rooms.as_deref(),
        Some(&["/chat".into(), "/r/*".into()][..])
    );
    assert!(!c.publish);
    let c = check(&valid(r#","nbf":null,"rooms":null,"publish":null"#)).unwrap();
    assert_eq!((c.nbf, c.rooms, c.publish), (None, None, true));
}

#[test]
fn a_published_token_made_elsewhere_verifies() {
    // jwt.io's HS256 example, signed with "your-256-bit-secret". It carries no `exp`, so it is
    // refused, but only after its signature has been found good: with another key it is forged.
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                 eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                 SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert_eq!(
        verify(token, b"your-256-bit-secret", NOW),
        Err(Rejection::Malformed("token has no exp claim"))
    );
    assert_eq!(
        verify(token, b"your-256-bit-secreT", NOW),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn exp_and_nbf_allow_a_little_clock_skew_and_no_more() {
    let skew = CLOCK_SKEW_SECS as u64;
    let exp = mint(&format!(r#"{{"exp":{NOW}}}"#));
    assert!(verify(&exp, KEY, NOW - 1).is_ok());
    assert!(verify(&exp, KEY, NOW + skew - 1).is_ok());
    assert_eq!(verify(&exp, KEY, NOW + skew), Err(Rejection::Expired));
    assert_eq!(verify(&exp, KEY, u64::MAX), Err(Rejection::Expired));
    assert_eq!(
        check(&mint(&format!(r#"{{"exp":{}}}"#, NOW - 3600))),
        Err(Rejection::Expired)
    );

    let nbf = mint(&format!(r#"{{"exp":{},"nbf":{NOW}}}"#, NOW + 3600));
    assert!(verify(&nbf, KEY, NOW).is_ok());
    assert!(verify(&nbf, KEY, NOW - skew).is_ok());
    assert_eq!(
        verify(&nbf, KEY, NOW - skew - 1),
        Err(Rejection::NotYetValid)
    );
    assert_eq!(
        check(&valid(&format!(r#","nbf":{}"#, NOW + 3600))),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn numeric_dates_may_be_fractional_or_huge() {
    assert_eq!(
        check(&mint(&format!(r#"{{"exp":{NOW}.9e0}}"#))).map(|c| c.exp),
        Ok(NOW as i64)
    );
    assert_eq!(
        check(&mint(r#"{"exp":1e300}"#)).map(|c| c.exp),
        Ok(i64::MAX)
    );
    assert_eq!(
        check(&mint(r#"{"exp":99999999999999999999}"#)).map(|c| c.exp),
        Ok(i64::MAX)
    );
    assert_eq!(check(&mint(r#"{"exp":-1e300}"#)), Err(Rejection::Expired));
    assert_eq!(check(&valid(r#","nbf":-5"#)).map(|c| c.nbf), Ok(Some(-5)));
}

#[test]
fn only_hs256_is_accepted() {
    let claims = format!(r#"{{"exp":{}}}"#, NOW + 3600);
    let with = |header: &str| sign_raw(header.as_bytes(), claims.as_bytes(), KEY);
    let alg = "token alg is not HS256";
    // alg none, unsigned (as an attacker sends it) and signed all the same.
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims.as_bytes()));
    assert_eq!(malformed(&unsigned), alg);
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"HS512"}"#,
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":["HS256"]}"#,
        r#"{"typ":"JWT"}"#,
        "{}",
    ] {
        assert_eq!(malformed(&with(header)), alg, "{header}");
    }
    assert_eq!(
        malformed(&with(r#"{"alg":"HS256","crit":["exp"]}"#)),
        "token has a crit header"
    );
    assert!(
        check(&with(r#"{"alg":"HS256"}"#)).is_ok(),
        "typ is optional"
    );
}

#[test]
fn forged_tokens_fail_the_signature() {
    let good = valid("");
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let header = signed.split_once('.').unwrap().0;
    // Claims changed under the old signature.
    let more = b64(format!(r#"{{"exp":{}}}"#, NOW + 7200).as_bytes());
    assert_eq!(
        check(&format!("{header}.{more}.{sig}")),
        Err(Rejection::BadSignature)
    );
    // Signed with another key, or with the key one byte short.
    let other = sign_raw(HS256.as_bytes(), br#"{"exp":9999999999}"#, b"another key");
    assert_eq!(check(&other), Err(Rejection::BadSignature));
    assert_eq!(verify(&good, &KEY[1..], NOW), Err(Rejection::BadSignature));
    // A signature cut short, lengthened, emptied, or with one bit flipped.
    assert_eq!(
        check(&format!("{signed}.{}", &sig[..40])),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        check(&format!("{signed}.{sig}AAAA")),
        Err(Rejection::BadSignature)
    );
    assert_eq!(check(&format!("{signed}.")), Err(Rejection::BadSignature));
    let mut flipped = URL_SAFE_NO_PAD.decode(sig).unwrap();
    flipped[0] ^= 1;
    assert_eq!(
        check(&format!("{signed}.{}", b64(&flipped))),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn malformed_tokens_say_which_part_is_wrong() {
    let good = valid("");
    let shape = "token is not a JWT (three base64url parts joined by dots)";
    for token in ["", "abc", "a.b", "a.b.c.d", &format!("{good}.x")] {
        assert_eq!(malformed(token), shape, "{token:?}");
    }
    let header = "token header is not base64url JSON";
    assert_eq!(malformed("!!.e30.x"), header);
    assert_eq!(malformed(&format!("{}.e30.x", b64(b"not json"))), header);
    assert_eq!(malformed(&format!("{}.e30.x", b64(b"[1]"))), header);
    assert_eq!(
        malformed(&format!("{}=.e30.x", b64(HS256.as_bytes()))),
        header,
        "no padding in a JWT"
    );
    let (signed, sig) = good.rsplit_once('.').unwrap();
    assert_eq!(
        malformed(&format!("{signed}.{sig}=")),
        "token signature is not base64url"
    );
    assert_eq!(
        malformed(&format!("{signed}.+/+/")),
        "token signature is not base64url"
    );
    let payload = "token payload is not base64url JSON";
    for bad in [
        &b"not json"[..],
        b"[1,2]",
        b"\"exp\"",
        b"{\"exp\":1",
        b"\xff",
    ] {
        let token = sign_raw(HS256.as_bytes(), bad, KEY);
        assert_eq!(malformed(&token), payload, "{bad:?}");
    }
    assert_eq!(malformed(&mint("{}")), "token has no exp claim");
    assert_eq!(
        malformed(&mint(r#"{"exp":null}"#)),
        "token has no exp claim"
    );
    assert_eq!(
        malformed(&mint(r#"{"exp":"tomorrow"}"#)),
        "token exp is not a number"
    );
    assert_eq!(
        malformed(&valid(r#","nbf":"now""#)),
        "token nbf is not a number"
    );
    for rooms in [r#""/chat""#, r#"["/chat",1]"#, "{}"] {
        assert_eq!(
            malformed(&valid(&format!(r#","rooms":{rooms}"#))),
            "token rooms is not a list of paths"
        );
    }
    assert_eq!(
        malformed(&valid(r#","publish":"yes""#)),
        "token publish is not true or false"
    );
}

#[test]
fn rooms_name_paths_and_patterns() {
    let with = |rooms: Option<&[&str]>| Claims {
        exp: 0,
        nbf: None,
        rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
        publish: true,
        sub: None,
        iat: None,
    };
    assert!(with(None).opens("/anything"));
    assert!(!with(Some(&[])).opens("/chat"));
    let c = with(Some(&["/chat", "/rooms/*", "/a/b/*"]));
    for open in ["/chat", "/rooms/x", "/rooms/x/y", "/rooms/", "/a/b/c"] {
        assert!(c.opens(open), "{open}");
    }
    for shut in [
        "/chat/",
        "/chat2",
        "/rooms",
        "/roomsx/a",
        "/a/b",
        "/a/c",
        "/Chat",
        "/",
    ] {
        assert!(!c.opens(shut), "{shut}");
    }
    assert!(with(Some(&["/*"])).opens("/any/path"));
    // A `*` that does not end a `/`-prefix is a literal path, as a room path would have to be.
    let odd = with(Some(&["/rooms*", "*"]));
    assert!(odd.opens("/rooms*") && !odd.opens("/rooms/x") && !odd.opens("/x"));
}

#[test]
fn the_token_comes_from_the_bearer_header_or_the_query() {
    let t = |q: Option<&'static str>, h: Option<&'static str>| token_in(q, h);
    assert_eq!(t(Some("token=abc"), None), Ok("abc"));
    assert_eq!(t(Some("a=1&token=a.b.c&b=2"), None), Ok("a.b.c"));
    assert_eq!(t(Some("a=token=x&token=y"), None), Ok("y"));
    assert_eq!(t(None, None), Err(Rejection::Missing));
    assert_eq!(t(Some(""), None), Err(Rejection::Missing));
    assert_eq!(
        t(Some("xtoken=abc&tokens=1"), None),
        Err(Rejection::Missing)
    );
    assert_eq!(t(Some("Token=abc"), None), Err(Rejection::Missing));
    assert_eq!(
        t(Some("token=&a=1"), None),
        Err(Rejection::Malformed("empty token"))
    );
    assert_eq!(
        t(Some("token"), None),
        Err(Rejection::Malformed("empty token"))
    );
    assert_eq!(
        t(Some("token=a&token=a"), None),
        Err(Rejection::Malformed("token given twice"))
    );

    assert_eq!(t(None, Some("Bearer abc")), Ok("abc"));
    assert_eq!(t(None, Some("bearer  abc ")), Ok("abc"));
    assert_eq!(
        t(Some("token=q"), Some("BEARER h")),
        Ok("h"),
        "the header wins"
    );
    assert_eq!(t(Some("token=q"), Some("Basic dXNlcjpwdw==")), Ok("q"));
    assert_eq!(t(None, Some("Basic dXNlcjpwdw==")), Err(Rejection::Missing));
    assert_eq!(t(None, Some("Bearer")), Err(Rejection::Missing));
    assert_eq!(
        t(None, Some("Bearer   ")),
        Err(Rejection::Missing),
        "trimmed to a bare scheme"
    );
}

#[test]
fn admit_puts_it_together_and_only_a_wrong_room_is_forbidden() {
    let chat_only = valid(r#","rooms":["/chat"],"publish":false"#);
    let query = format!("token={chat_only}");
    let c = admit(Some(&query), None, KEY, NOW, "/chat").unwrap();
    assert!(!c.publish);
    let r = admit(Some(&query), None, KEY, NOW, "/other").unwrap_err();
    assert_eq!(r, Rejection::NotForRoom);
    assert!(r.is_forbidden());
    let header = format!("Bearer {chat_only}");
    assert!(admit(None, Some(&header), KEY, NOW, "/chat").is_ok());
    for r in [
        admit(None, None, KEY, NOW, "/chat").unwrap_err(),
        admit(Some("token=x.y.z"), None, KEY, NOW, "/chat").unwrap_err(),
        admit(Some(&query), None, b"wrong key", NOW, "/chat").unwrap_err(),
        admit(Some(&query), None, KEY, NOW + 7200, "/chat").unwrap_err(),
    ] {
        assert!(!r.is_forbidden(), "{r:?}");
        assert!(!r.reason().is_empty() && !r.reason().contains('.'), "{r:?}");
    }
}
