//! RESP2 from Redis (the cluster link): `resp::parse` on arbitrary bytes never panics, never
//! claims more bytes than it was given, and a value it parsed parses the same from its bytes
//! alone, with anything appended. What reads the values (the scripts' answers, the message
//! envelopes) never panics on them either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::server::cluster::resp;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((value, used))) = resp::parse(&data[at..]) {
        assert!(used > 0 && at + used <= data.len());
        let alone = &data[at..at + used];
        wsrelay::server::cluster::read_everything(&value, alone);
        assert_eq!(resp::parse(alone), Ok(Some((value.clone(), used))));
        let mut more = alone.to_vec();
        more.extend_from_slice(b"+tail\r\n");
        assert_eq!(resp::parse(&more), Ok(Some((value, used))));
        at += used;
    }
});
