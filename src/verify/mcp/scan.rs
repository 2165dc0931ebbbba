//! A strict single-pass reader of the JSON-RPC members the per-tool policy needs (RFC 8259):
//! `method`, and `params.name`/`params.uri`. Everything else is checked for well-formedness
//! and skipped without being built, so a 2 KB `tools/call` costs a scan of its bytes, not a
//! parse into values: the long strings of `arguments` are searched for their closing quote
//! with `memchr`, and checked for control characters in a loop the compiler vectorises.
//!
//! What it accepts and refuses is serde_json's (`from_slice`), member for member: the unit
//! tests compare both on generated and mutated bodies. A duplicate `method`, `params`, `name`
//! or `uri`, or a member that only case-folds to one of them, is refused (parsers differ on
//! which one wins; Go's `encoding/json` matches field names that way).

use std::borrow::Cow;

use super::{Message, Params};

/// Why a body is not JSON-RPC the policy can read (the caller names the shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

type Scan<T> = Result<T, Malformed>;

/// The messages of a body (one object, or a batch: an array of objects), each handed to
/// `each` as it is read; how many there were. Nothing is allocated for them.
pub fn messages<'a>(body: &'a [u8], mut each: impl FnMut(Message<'a>)) -> Scan<usize> {
    let mut r = Reader { b: body, i: 0 };
    r.whitespace();
    let mut count = 0;
    if r.peek() == Some(b'[') {
        r.i += 1;
        r.whitespace();
        if r.peek() == Some(b']') {
            r.i += 1;
        } else {
            loop {
                r.whitespace();
                each(r.message()?);
                count += 1;
                r.whitespace();
                match r.next()? {
                    b',' => continue,
                    b']' => break,
                    _ => return Err(Malformed),
                }
            }
        }
    } else {
        each(r.message()?);
        count = 1;
    }
    r.whitespace();
    if r.i != r.b.len() {
        return Err(Malformed);
    }
    Ok(count)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Scan<u8> {
        let c = self.peek().ok_or(Malformed)?;
        self.i += 1;
        Ok(c)
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The members of an object, each handed to `member` with its name and the reader at its
    /// value; `{` is next (after whitespace).
    fn object(&mut self, mut member: impl FnMut(&mut Self, Bytes<'a>) -> Scan<()>) -> Scan<()> {
        self.whitespace();
        if self.next()? != b'{' {
            return Err(Malformed);
        }
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(Malformed);
            }
            let key = self.bytes()?;
            self.whitespace();
            if self.next()? != b':' {
                return Err(Malformed);
            }
            self.whitespace();
            member(self, key)?;
            self.whitespace();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(()),
                _ => return Err(Malformed),
            }
        }
    }

    fn message(&mut self) -> Scan<Message<'a>> {
        let (mut method, mut params) = (None, None);
        self.object(|r, key| {
            match key.which(["method", "params"])? {
                Some(0) if method.is_none() => method = Some(r.text()?),
                Some(1) if params.is_none() => params = Some(r.params()?),
                Some(_) => return Err(Malformed),
                None => r.skip_value()?,
            }
            Ok(())
        })?;
        Ok(Message { method, params })
    }

    fn params(&mut self) -> Scan<Params<'a>> {
        let mut params = Params::default();
        match self.peek() {
            Some(b'{') => self.object(|r, key| {
                let slot = match key.which(["name", "uri"])? {
                    Some(0) => &mut params.name,
                    Some(_) => &mut params.uri,
                    None => return r.skip_value(),
                };
                if slot.is_some() {
                    return Err(Malformed);
                }
                // A non-string name is no name we can match: an error, never "no name".
                *slot = Some(r.text()?);
                Ok(())
            })?,
            // Positional params name nothing.
            Some(b'[') => self.skip_value()?,
            Some(b'n') => self.literal(b"null")?,
            _ => return Err(Malformed),
        }
        Ok(params)
    }

    /// A string value (anything else is an error).
    fn text(&mut self) -> Scan<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(Malformed);
        }
        self.string()
    }

    /// The string whose opening quote is next, borrowed from the body unless it has escapes;
    /// UTF-8 and paired surrogates are required, as for any string serde_json builds.
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        match self.bytes()?.text {
            Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed),
            Cow::Owned(b) => String::from_utf8(b)
                .map(Cow::Owned)
                .map_err(|e| e.utf8_error()),
        }
        .map_err(|_| Malformed)
    }

    /// The bytes of the string whose opening quote is next, escapes decoded (not yet checked
    /// for UTF-8).
    fn bytes(&mut self) -> Scan<Bytes<'a>> {
        self.i += 1;
        let start = self.i;
        let ascii = self.plain()?;
        if self.b[self.i] == b'"' {
            self.i += 1;
            return Ok(Bytes {
                text: Cow::Borrowed(&self.b[start..self.i - 1]),
                ascii,
            });
        }
        let mut out = self.b[start..self.i].to_vec();
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                _ => return Err(Malformed),
            }
            let run = self.i;
            self.plain()?;
            out.extend_from_slice(&self.b[run..self.i]);
        }
        let ascii = out.is_ascii();
        Ok(Bytes {
            text: Cow::Owned(out),
            ascii,
        })
    }

    /// Moves to the next `"` or `\` of a string; a control character before it (or the end
    /// of the body) is an error. Whether the bytes passed are all ASCII.
    fn plain(&mut self) -> Scan<bool> {
        const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
        let rest = &self.b[self.i..];
        // Member names and most values are short: their first 32 bytes eight at a time, where
        // memchr's setup would cost more than the search.
        let mut seen = 0u64;
        let mut at = 0;
        while at < 32
            && let Some(word) = rest
                .get(at..at + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            let word = u64::from_le_bytes(word);
            let stop = stops(word);
            if stop != 0 {
                let k = stop.trailing_zeros() as usize / 8;
                if rest[at + k] < 0x20 {
                    return Err(Malformed);
                }
                seen |= word & ((1u64 << (8 * k)) - 1);
                self.i += at + k;
                return Ok(seen & HIGH == 0);
            }
            seen |= word;
            at += 8;
        }
        let tail = &rest[at..];
        let n = memchr::memchr2(b'"', b'\\', tail).ok_or(Malformed)?;
        // No early exit, so this is a few vector instructions per 32 bytes.
        let (control, high) = tail[..n].iter().fold((false, false), |(c, h), &b| {
            (c | (b < 0x20), h | (b >= 0x80))
        });
        if control {
            return Err(Malformed);
        }
        self.i += at + n;
        Ok(!high && seen & HIGH == 0)
    }

    /// The escape after a `\`, decoded into `out`.
    fn escape(&mut self, out: &mut Vec<u8>) -> Scan<()> {
        let c = match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = match high {
                    0xDC00..=0xDFFF => return Err(Malformed),
                    0xD800..=0xDBFF => {
                        if self.next()? != b'\\' || self.next()? != b'u' {
                            return Err(Malformed);
                        }
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Malformed);
                        }
                        0x1_0000 + ((u32::from(high) - 0xD800) << 10 | (u32::from(low) - 0xDC00))
                    }
                    n => u32::from(n),
                };
                char::from_u32(code).ok_or(Malformed)?
            }
            _ => return Err(Malformed),
        };
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Scan<u16> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(Malformed)?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(Malformed)?;
            n = n << 4 | v as u16;
        }
        self.i += 4;
        Ok(n)
    }

    /// Skips a string whose opening quote is next, checking its escapes (serde_json checks
    /// an ignored string's escapes but not its UTF-8 or surrogates).
    fn skip_string(&mut self) -> Scan<()> {
        self.i += 1;
        loop {
            self.plain()?;
            self.i += 1;
            if self.b[self.i - 1] == b'"' {
                return Ok(());
            }
            match self.next()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    self.hex4()?;
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if !self.b[self.i..].starts_with(word) {
            return Err(Malformed);
        }
        self.i += word.len();
        Ok(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Scan<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(Malformed),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Scan<()> {
        let start = self.i;
        self.digits();
        if self.i == start {
            return Err(Malformed);
        }
        Ok(())
    }

    /// Skips one value of any shape, however deep, without recursion: `open` holds the
    /// arrays (`[`) and objects (`{`) entered and not yet closed.
    fn skip_value(&mut self) -> Scan<()> {
        let mut open = Open::default();
        loop {
            // A value.
            self.whitespace();
            match self.peek().ok_or(Malformed)? {
                b'"' => self.skip_string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                c @ (b'[' | b'{') => {
                    self.i += 1;
                    self.whitespace();
                    let close = if c == b'[' { b']' } else { b'}' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                    } else {
                        open.push(c == b'{');
                        if c == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Malformed),
            }
            // What follows it: a comma and the next value, or the end of what holds it.
            loop {
                let Some(in_object) = open.last() else {
                    return Ok(());
                };
                self.whitespace();
                match (self.next()?, in_object) {
                    (b',', false) => break,
                    (b',', true) => {
                        self.member_key()?;
                        break;
                    }
                    (b']', false) | (b'}', true) => open.pop(),
                    _ => return Err(Malformed),
                }
            }
        }
    }

    /// `"key":` of a member being skipped.
    fn member_key(&mut self) -> Scan<()> {
        self.whitespace();
        if self.peek() != Some(b'"') {
            return Err(Malformed);
        }
        self.skip_string()?;
        self.whitespace();
        if self.next()? != b':' {
            return Err(Malformed);
        }
        Ok(())
    }
}

/// The high bit of each byte of `word` that is `"`, `\` or a control character, and possibly of
/// bytes after the first such (a borrow carries upwards), never before it.
fn stops(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    (word.wrapping_sub(ONES * 0x20) & !word & HIGH)
        | zero(word ^ (ONES * u64::from(b'"')))
        | zero(word ^ (ONES * u64::from(b'\\')))
}

/// A string's bytes, escapes decoded.
struct Bytes<'a> {
    text: Cow<'a, [u8]>,
    ascii: bool,
}

impl Bytes<'_> {
    /// Which of `names` this member name is; an error when it only case-folds to one of them
    /// (or is not UTF-8, which serde_json refuses in a member name).
    #[inline(always)]
    fn which<const N: usize>(&self, names: [&str; N]) -> Scan<Option<usize>> {
        let key: &[u8] = &self.text;
        if let Some(i) = names.iter().position(|n| n.as_bytes() == key) {
            return Ok(Some(i));
        }
        let folds = if self.ascii {
            names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(key))
        } else {
            folds_to(std::str::from_utf8(key).map_err(|_| Malformed)?, &names)
        };
        if folds { Err(Malformed) } else { Ok(None) }
    }
}

/// The arrays and objects a skipped value has entered: a bit each (set for an object), in a
/// word for the first 64 levels and on the heap beyond, so a skip allocates nothing unless
/// the JSON is deeper than arguments ever are.
#[derive(Default)]
struct Open {
    depth: usize,
    bits: u64,
    deeper: Vec<bool>,
}

impl Open {
    fn push(&mut self, object: bool) {
        if self.depth < 64 {
            self.bits = self.bits & !(1 << self.depth) | u64::from(object) << self.depth;
        } else {
            self.deeper.push(object);
        }
        self.depth += 1;
    }

    fn last(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 64 => Some(self.bits >> (d - 1) & 1 == 1),
            _ => self.deeper.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

/// Whether `key` (not exactly one of `targets`) equals one of them under the case folding
/// some JSON decoders apply to member names: ASCII case, and the Unicode characters that fold
/// to ASCII letters (U+017F ſ → s, U+212A Kelvin sign → k).
pub(super) fn folds_to(key: &str, targets: &[&str]) -> bool {
    let fold = |c: char| match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    // Each folding character is 1 to 3 bytes: a longer or shorter key cannot match.
    targets.iter().any(|t| {
        (t.len()..=3 * t.len()).contains(&key.len()) && key.chars().map(fold).eq(t.chars())
    })
}

#[cfg(test)]
mod tests;
