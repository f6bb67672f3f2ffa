//! The `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1), for any extension: a comma-separated
//! list of extensions, each a token followed by `;`-separated parameters, each a token with an
//! optional value, itself a token or a quoted string (RFC 7230 §3.2.6). Optional whitespace may
//! surround every separator, and empty list elements are skipped (RFC 7230 §7). Everything is
//! borrowed from the header value: nothing here allocates, so a hostile header costs one pass.

/// A header value that does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A parameter's value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `name` alone.
    None,
    /// `name=token`.
    Token(&'a str),
    /// `name="..."`: the text between the quotes, backslash escapes still in it.
    Quoted(&'a str),
}

impl<'a> Value<'a> {
    /// The value's characters after unescaping (RFC 7692 §7.1 compares the unescaped value);
    /// empty for [`Value::None`].
    pub fn chars(self) -> impl Iterator<Item = char> + 'a {
        let (text, quoted) = match self {
            Value::None => ("", false),
            Value::Token(t) => (t, false),
            Value::Quoted(q) => (q, true),
        };
        let mut it = text.chars();
        std::iter::from_fn(move || match it.next() {
            Some('\\') if quoted => it.next(),
            c => c,
        })
    }
}

/// One parameter of an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub value: Value<'a>,
}

/// One element of the list: an extension's name and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub name: &'a str,
    /// The parameters' text, already checked against the grammar.
    params: &'a str,
}

impl<'a> Extension<'a> {
    /// The parameters in the order written.
    pub fn params(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        let mut c = Cursor::new(self.params);
        // The text was checked when the extension was parsed: `param` cannot fail on it.
        std::iter::from_fn(move || c.param().ok().flatten())
    }
}

/// The extensions of one header value, in order; stops at the first error (an `Err` item).
pub fn extensions(value: &str) -> impl Iterator<Item = Result<Extension<'_>, Malformed>> {
    let mut c = Cursor::new(value);
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let item = c.extension().transpose()?;
        failed = item.is_err();
        Some(item)
    })
}

/// A position in a header value.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    /// Skip optional whitespace.
    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    /// `1*tchar`.
    fn token(&mut self) -> Result<&'a str, Malformed> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(Malformed);
        }
        Ok(&self.s[start..self.at])
    }

    /// A quoted string, the cursor on its opening quote; what is between the quotes.
    fn quoted(&mut self) -> Result<&'a str, Malformed> {
        self.at += 1;
        let start = self.at;
        loop {
            match self.peek().ok_or(Malformed)? {
                b'"' => {
                    let inner = &self.s[start..self.at];
                    self.at += 1;
                    return Ok(inner);
                }
                b'\\' => {
                    self.at += 1;
                    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    match self.peek() {
                        Some(b) if b == b'\t' || b >= b' ' && b != 0x7f => self.at += 1,
                        _ => return Err(Malformed),
                    }
                }
                // qdtext: HTAB / SP / VCHAR but '"' and '\' / obs-text (here, UTF-8 bytes).
                b if b == b'\t' || b >= b' ' && b != 0x7f => self.at += 1,
                _ => return Err(Malformed),
            }
        }
    }

    /// `; name[=value]` if the cursor is on one (after optional whitespace).
    fn param(&mut self) -> Result<Option<Param<'a>>, Malformed> {
        self.ows();
        if !self.eat(b';') {
            return Ok(None);
        }
        self.ows();
        let name = self.token()?;
        self.ows();
        if !self.eat(b'=') {
            return Ok(Some(Param {
                name,
                value: Value::None,
            }));
        }
        self.ows();
        let value = if self.peek() == Some(b'"') {
            Value::Quoted(self.quoted()?)
        } else {
            Value::Token(self.token()?)
        };
        Ok(Some(Param { name, value }))
    }

    /// The next extension, skipping empty list elements; `None` at the end of the value.
    fn extension(&mut self) -> Result<Option<Extension<'a>>, Malformed> {
        loop {
            self.ows();
            if !self.eat(b',') {
                break;
            }
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        let name = self.token()?;
        let start = self.at;
        while self.param()?.is_some() {}
        let params = &self.s[start..self.at];
        self.ows();
        if self.peek().is_some_and(|b| b != b',') {
            return Err(Malformed);
        }
        Ok(Some(Extension { name, params }))
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every extension with its parameters as `(name, value as unescaped text or None)`.
    #[allow(clippy::type_complexity)]
    fn parse(v: &str) -> Result<Vec<(&str, Vec<(&str, Option<String>)>)>, Malformed> {
        extensions(v)
            .map(|e| {
                e.map(|e| {
                    let params = e
                        .params()
                        .map(|p| {
                            let text = (p.value != Value::None).then(|| p.value.chars().collect());
                            (p.name, text)
                        })
                        .collect();
                    (e.name, params)
                })
            })
            .collect()
    }

    #[test]
    fn lists_parameters_and_values() {
        let v = "permessage-deflate ; client_max_window_bits,\tx-webkit-deflate-frame, \
                 permessage-deflate;server_max_window_bits=\"1\\0\";a=b";
        let got = parse(v).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            ("permessage-deflate", vec![("client_max_window_bits", None)])
        );
        assert_eq!(got[1], ("x-webkit-deflate-frame", vec![]));
        assert_eq!(
            got[2],
            (
                "permessage-deflate",
                vec![
                    ("server_max_window_bits", Some("10".to_string())),
                    ("a", Some("b".to_string()))
                ]
            )
        );
    }

    #[test]
    fn empty_elements_and_values_are_fine() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse(" , ,").unwrap(), vec![]);
        assert_eq!(
            parse(",a,,b ,").unwrap(),
            vec![("a", vec![]), ("b", vec![])]
        );
        assert_eq!(
            parse("a; q=\"\"").unwrap(),
            vec![("a", vec![("q", Some(String::new()))])]
        );
    }

    #[test]
    fn bad_syntax_is_malformed() {
        for v in [
            "a;",             // a parameter without a name
            "a; =1",          // a value without a name
            "a; b=",          // a name and '=' without a value
            "a b",            // two tokens without a separator
            "a; b=\"1",       // an unterminated quoted string
            "a; b=\"1\\",     // an escape at the end
            "a; b=\"1\" 2",   // junk after a value
            "a; b=1\"2\"",    // a quote inside a token
            "(a)",            // not a token
            "a; b=\"\u{1}\"", // a control character in a quoted string
            "a;\u{0}",        // a control character
            "permessage-deflate; server_max_window_bits=10 10",
        ] {
            assert_eq!(parse(v), Err(Malformed), "{v:?}");
        }
    }

    #[test]
    fn an_error_ends_the_list() {
        let items: Vec<_> = extensions("a, (b), c").collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1].is_err());
    }
}
