//! Negotiation (RFC 7692 §5, §7.1): the client's `Sec-WebSocket-Extensions` offers in, the
//! parameters we agree to and our answer out.
//!
//! We accept the first `permessage-deflate` offer that is valid, in the client's order of
//! preference (§5.1). Every offer we accept we can honour: whatever the client asks of our
//! direction we can do (no context takeover, any window from 8 to 15), and whatever it says of
//! its own we can take (we answer `client_no_context_takeover` and inflate with a 15-bit window).
//! An offer is declined, and the next one tried, when it has a parameter §7.1 does not define for
//! offers, a parameter twice, or a value that is not allowed (§7: "A server MUST decline an
//! extension negotiation offer for this extension if any of the following conditions are met").
//! A header that does not follow the grammar at all declines everything: the connection goes on
//! without compression, as with a client that offered none.

use std::fmt;

use super::WindowBits;
use super::header::{self, Value};

/// The extension's registered name.
pub const NAME: &str = "permessage-deflate";

/// What we agreed with one client: the only thing that differs between connections is the
/// largest window the client lets us compress with. Kept per connection (two bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The `server_max_window_bits` the client offered, if it did (then our answer repeats it).
    server_max_window_bits: Option<WindowBits>,
}

impl Agreed {
    /// The largest window our compressed frames to this client may use: what it offered, else
    /// the protocol's 15.
    pub fn server_window(self) -> WindowBits {
        self.server_max_window_bits.unwrap_or(WindowBits::MAX)
    }

    /// Whether this client can inflate a frame that needs a window of `needs` (see
    /// [`super::Deflated::needs`]).
    pub fn takes(self, needs: WindowBits) -> bool {
        needs <= self.server_window()
    }
}

/// The value of our `Sec-WebSocket-Extensions` response header.
///
/// `server_no_context_takeover`: every message is compressed on its own, so one compressed frame
/// is right for every recipient (§7.1.1.1 lets us say it unasked). `client_no_context_takeover`:
/// the client does the same, so any inflater can take any of its messages and a connection keeps
/// no inflate state between messages (§7.1.1.2 lets us say it unasked too). No
/// `client_max_window_bits`: we inflate with the largest window, which takes any smaller one.
impl fmt::Display for Agreed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NAME}; server_no_context_takeover; client_no_context_takeover"
        )?;
        if let Some(bits) = self.server_max_window_bits {
            // §7.1.2.1: accepting an offer with this parameter means answering it, with the
            // same or a smaller value; we never use more than the client allows.
            write!(f, "; server_max_window_bits={}", bits.get())?;
        }
        Ok(())
    }
}

/// The first `permessage-deflate` offer we accept among the client's `Sec-WebSocket-Extensions`
/// header lines (in the order received), or `None`: no offer, none valid, or a malformed header.
pub fn negotiate<'a>(lines: impl IntoIterator<Item = &'a str> + Clone) -> Option<Agreed> {
    // The whole header is checked first: a client whose header we cannot read gets no extension,
    // even if an offer before the error looked fine.
    let well_formed = lines
        .clone()
        .into_iter()
        .all(|line| header::extensions(line).all(|e| e.is_ok()));
    if !well_formed {
        return None;
    }
    lines
        .into_iter()
        .flat_map(header::extensions)
        .filter_map(Result::ok)
        .filter(|e| e.name == NAME)
        .find_map(|e| accept(e.params()))
}

/// The parameters of one offer, if we accept it.
fn accept<'a>(params: impl Iterator<Item = header::Param<'a>>) -> Option<Agreed> {
    let (mut server_nct, mut client_nct) = (false, false);
    let mut server_bits: Option<WindowBits> = None;
    let mut client_bits: Option<Option<WindowBits>> = None;
    for p in params {
        match p.name {
            "server_no_context_takeover" if !server_nct && p.value == Value::None => {
                server_nct = true
            }
            "client_no_context_takeover" if !client_nct && p.value == Value::None => {
                client_nct = true
            }
            // §7.1.2.1: a value is required.
            "server_max_window_bits" if server_bits.is_none() => {
                server_bits = Some(window_bits(p.value)?);
            }
            // §7.1.2.2: the value is optional ("I can take your answer"); if present, valid.
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match p.value {
                    Value::None => None,
                    v => Some(window_bits(v)?),
                });
            }
            // Unknown, repeated, or a value where none belongs.
            _ => return None,
        }
    }
    Some(Agreed {
        server_max_window_bits: server_bits,
    })
}

/// A window-bits value: a decimal from 8 to 15 without leading zeros (§7.1.2.1), after
/// unescaping a quoted string (§7.1).
fn window_bits(value: Value<'_>) -> Option<WindowBits> {
    let mut n: u8 = 0;
    for (i, c) in value.chars().enumerate() {
        let d = c.to_digit(10)? as u8;
        if (i == 0 && d == 0) || i == 2 {
            return None;
        }
        n = n * 10 + d;
    }
    WindowBits::new(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Option<Agreed> {
        negotiate([v])
    }

    fn agreed(bits: Option<u8>) -> Option<Agreed> {
        Some(Agreed {
            server_max_window_bits: bits.map(|b| WindowBits::new(b).unwrap()),
        })
    }

    const ANSWER: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_real_clients_offer() {
        let cases: &[(&str, &str, Option<Agreed>)] = &[
            // Chromium and Safari.
            (
                "chromium",
                "permessage-deflate; client_max_window_bits",
                agreed(None),
            ),
            // Firefox.
            ("firefox", "permessage-deflate", agreed(None)),
            // Python websockets' default client.
            (
                "python websockets",
                "permessage-deflate; client_max_window_bits",
                agreed(None),
            ),
            // A client that limits its own window (we inflate with any).
            (
                "client window 9",
                "permessage-deflate; client_max_window_bits=9",
                agreed(None),
            ),
            // Node ws with perMessageDeflate: true.
            (
                "node ws",
                "permessage-deflate; client_max_window_bits",
                agreed(None),
            ),
            // Go gorilla / nhooyr and others that ask for both directions without context.
            (
                "no context both ways",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                agreed(None),
            ),
        ];
        for (who, offer, want) in cases {
            assert_eq!(one(offer), *want, "{who}: {offer}");
            assert_eq!(one(offer).unwrap().to_string(), ANSWER, "{who}");
        }
    }

    /// Autobahn 13.x: `client_no_context_takeover; client_max_window_bits` always, plus
    /// `server_no_context_takeover` and `server_max_window_bits=N` as the case asks.
    #[test]
    fn autobahn_offers_every_window() {
        for bits in 8..=15u8 {
            for nct in ["", "; server_no_context_takeover"] {
                let offer = format!(
                    "permessage-deflate; client_no_context_takeover; client_max_window_bits{nct}; \
                     server_max_window_bits={bits}"
                );
                let a = one(&offer).unwrap_or_else(|| panic!("declined {offer}"));
                assert_eq!(a.server_window().get(), bits);
                assert_eq!(
                    a.to_string(),
                    format!("{ANSWER}; server_max_window_bits={bits}")
                );
            }
        }
        // 13.7.x: several offers, the first one we can take wins.
        let offer = "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
                     server_max_window_bits=8, permessage-deflate; client_no_context_takeover; \
                     client_max_window_bits; server_no_context_takeover, permessage-deflate; \
                     client_no_context_takeover; client_max_window_bits";
        assert_eq!(one(offer), agreed(Some(8)));
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits", // needs a value
            "permessage-deflate; server_max_window_bits=7", // too small
            "permessage-deflate; server_max_window_bits=16", // too big
            "permessage-deflate; server_max_window_bits=010", // leading zero
            "permessage-deflate; server_max_window_bits=+9", // not a decimal
            "permessage-deflate; server_max_window_bits=\"\"", // empty
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=99999999999999999999",
            "permessage-deflate; server_no_context_takeover=1", // takes no value
            "permessage-deflate; client_no_context_takeover=\"\"",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; x-unknown",
            "permessage-deflate; Server_No_Context_Takeover", // names are exact
        ] {
            assert_eq!(one(bad), None, "accepted {bad}");
            let then = format!("{bad}, permessage-deflate; server_max_window_bits=12");
            assert_eq!(one(&then), agreed(Some(12)), "{then}");
        }
    }

    #[test]
    fn quoted_values_count_after_unescaping() {
        assert_eq!(
            one("permessage-deflate; server_max_window_bits=\"10\""),
            agreed(Some(10))
        );
        assert_eq!(
            one("permessage-deflate; server_max_window_bits=\"1\\1\""),
            agreed(Some(11))
        );
        assert_eq!(
            one("permessage-deflate; client_max_window_bits=\"9\""),
            agreed(None)
        );
        assert_eq!(
            one("permessage-deflate; server_max_window_bits=\"1 1\""),
            None
        );
    }

    #[test]
    fn several_lines_and_other_extensions() {
        // Lines count in the order received; other extensions are passed over.
        assert_eq!(
            negotiate([
                "x-webkit-deflate-frame",
                "foo; bar=1, permessage-deflate; server_max_window_bits=9"
            ]),
            agreed(Some(9))
        );
        assert_eq!(negotiate(["x-webkit-deflate-frame"]), None);
        assert_eq!(negotiate(Vec::<&str>::new()), None);
        assert_eq!(negotiate([""]), None);
        // An extension name is exact, like a parameter name.
        assert_eq!(one("Permessage-Deflate"), None);
    }

    #[test]
    fn a_malformed_header_declines_everything() {
        assert_eq!(one("permessage-deflate, (junk)"), None);
        assert_eq!(negotiate(["permessage-deflate", "a;;"]), None);
        assert_eq!(one("permessage-deflate; server_max_window_bits=\"10"), None);
    }

    #[test]
    fn our_answer_is_itself_an_offer_we_would_accept_alike() {
        for a in [agreed(None), agreed(Some(8)), agreed(Some(15))] {
            let a = a.unwrap();
            assert_eq!(one(&a.to_string()), Some(a));
        }
    }

    #[test]
    fn window_rules() {
        let a = agreed(Some(10)).unwrap();
        let w = |b| WindowBits::new(b).unwrap();
        assert!(a.takes(w(8)) && a.takes(w(10)) && !a.takes(w(11)));
        assert!(agreed(None).unwrap().takes(WindowBits::MAX));
        assert!(std::mem::size_of::<Option<Agreed>>() <= 2);
    }
}
