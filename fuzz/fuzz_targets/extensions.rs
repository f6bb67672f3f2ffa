//! The `Sec-WebSocket-Extensions` header as a client sends it: `wsrelay::deflate::header` (the
//! RFC 6455 §9.1 grammar) and `wsrelay::deflate::negotiate` on arbitrary header lines. Checked on
//! the way: no panic; every extension, parameter and unescaped value of a line can be walked; an
//! accepted offer is a `permessage-deflate` one, with a window from 8 to 15, and our answer,
//! read back as an offer, is accepted alike (so a client reading it gets what we agreed).
//!
//! Input: the header lines, separated by `\n`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::deflate::{self, header};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut well_formed = true;
    for line in &lines {
        for item in header::extensions(line) {
            let Ok(ext) = item else {
                well_formed = false;
                break;
            };
            assert!(!ext.name.is_empty() && line.contains(ext.name));
            for p in ext.params() {
                assert!(!p.name.is_empty());
                assert!(p.value.chars().count() <= line.len());
            }
        }
    }
    let Some(agreed) = deflate::negotiate(lines.iter().copied()) else {
        return;
    };
    assert!(well_formed, "accepted an offer in a malformed header");
    assert!(text.contains(deflate::NAME));
    assert!((8..=15).contains(&agreed.server_window().get()));
    let answer = agreed.to_string();
    assert!(answer.starts_with(deflate::NAME));
    assert_eq!(
        deflate::negotiate([answer.as_str()]),
        Some(agreed),
        "{answer}"
    );
});
