//! Proves the `messages` array of a Stitch Import API Batch request valid against a plain schema
//! (top-level fields typed integer, number, boolean, string or date-time), without building a
//! single value: the request path only needs the answer, and the commit builds the table later.
//!
//! It only ever proves. Anything it is not certain the Python paths accept (an escape in a key, a
//! date-time in a rarer shape, a null where it may not be, any doubt) answers "not proven" (-1),
//! and `push/typed.py` decides the slow way, with Stitch's exact message. Safe Rust only, but for
//! turning the two (pointer, length) pairs into slices; a panic is caught and answers -1 too.

use std::collections::HashMap;
use std::panic;
use std::slice;

const KIND_INTEGER: u8 = 0;
const KIND_NUMBER: u8 = 1;
const KIND_BOOLEAN: u8 = 2;
const KIND_STRING: u8 = 3;
const KIND_DATETIME: u8 = 4;

const MODE_KEY: u8 = 0; // present, not null; string keys at most max_key_chars
#[allow(dead_code)] // (sent by the Python side; every mode but the others means it)
const MODE_VALUE: u8 = 1; // present, not null
const MODE_NULL_OR_VALUE: u8 = 2; // present, null allowed
const MODE_ABSENT_OR_VALUE: u8 = 3; // absent allowed, null not
const MODE_ANY: u8 = 4; // absent, null or a value

/// The bytes a string's plain run stops at: a quote, a backslash, a control character, not ASCII.
const STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 256 {
        stops[c] = c == b'"' as usize || c == b'\\' as usize || c < 0x20 || c >= 0x80;
        c += 1;
    }
    stops
};

struct Field<'a> {
    name: &'a [u8],
    kind: u8,
    mode: u8,
}

/// The number of messages when every one is provably valid, else -1.
///
/// `spec` lists the fields: for each, kind (u8), mode (u8), the name's length (u16, little endian)
/// and the name's UTF-8 bytes.
///
/// # Safety
/// `messages` and `spec` must point to `messages_len` and `spec_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn prequel_prove_messages(
    messages: *const u8,
    messages_len: usize,
    spec: *const u8,
    spec_len: usize,
    max_records: i64,
    max_key_chars: i64,
) -> i64 {
    if messages.is_null() || spec.is_null() || messages_len == 0 {
        return -1;
    }
    let messages = unsafe { slice::from_raw_parts(messages, messages_len) };
    let spec = unsafe { slice::from_raw_parts(spec, spec_len) };
    panic::catch_unwind(|| prove(messages, spec, max_records, max_key_chars).unwrap_or(-1))
        .unwrap_or(-1)
}

fn prove(messages: &[u8], spec: &[u8], max_records: i64, max_key_chars: i64) -> Option<i64> {
    let mut p = Parser { b: messages, i: 0 };
    p.ws();
    let count = p.messages(spec, max_records, max_key_chars)?;
    p.ws();
    (p.i == p.b.len()).then_some(count)
}

/// The top-level keys of a Batch request, in `out`'s order (a (start, end) pair of byte offsets each).
const TOP_KEYS: [&[u8]; 6] = [
    b"table_name",
    b"schema",
    b"messages",
    b"key_names",
    b"table_version",
    b"bookmark_names",
];
const MESSAGES: usize = 2;
const MAX_DEPTH: u32 = 100;

/// Reads a whole Batch request up to the value of `messages`: where each top-level value before it
/// starts and ends (in `out`, 12 slots: a pair per key of `TOP_KEYS`, -1 where absent), and the
/// offset where the messages start; -1 when the body is not plainly one (an unknown or repeated
/// key, an escape in a key, no messages, bad JSON).
///
/// The values are only delimited (their JSON checked): the caller reads them. The messages come
/// next, by `prequel_prove_batch_rest`, with the field spec the schema among those values gives.
///
/// # Safety
/// `body` must point to `body_len` readable bytes and `out` to 12 writable i64.
#[no_mangle]
pub unsafe extern "C" fn prequel_batch_head(
    body: *const u8,
    body_len: usize,
    out: *mut i64,
) -> i64 {
    if body.is_null() || out.is_null() || body_len == 0 {
        return -1;
    }
    let body = unsafe { slice::from_raw_parts(body, body_len) };
    let out = unsafe { slice::from_raw_parts_mut(out, 2 * TOP_KEYS.len()) };
    panic::catch_unwind(panic::AssertUnwindSafe(|| head(body, out).unwrap_or(-1))).unwrap_or(-1)
}

/// The messages from offset `at` (what `prequel_batch_head` answered) proven against `spec` (as
/// `prequel_prove_messages` does), then the rest of the request, whose values' offsets are added to
/// `out` (filled by `prequel_batch_head`; a key seen twice is a doubt): the number of messages, or -1.
///
/// # Safety
/// `body` and `spec` must point to `body_len` and `spec_len` readable bytes, `out` to 12 writable i64.
#[no_mangle]
pub unsafe extern "C" fn prequel_prove_batch_rest(
    body: *const u8,
    body_len: usize,
    at: usize,
    spec: *const u8,
    spec_len: usize,
    max_records: i64,
    max_key_chars: i64,
    out: *mut i64,
) -> i64 {
    if body.is_null() || spec.is_null() || out.is_null() || at >= body_len {
        return -1;
    }
    let body = unsafe { slice::from_raw_parts(body, body_len) };
    let spec = unsafe { slice::from_raw_parts(spec, spec_len) };
    let out = unsafe { slice::from_raw_parts_mut(out, 2 * TOP_KEYS.len()) };
    let rest = || rest(body, at, spec, max_records, max_key_chars, out).unwrap_or(-1);
    panic::catch_unwind(panic::AssertUnwindSafe(rest)).unwrap_or(-1)
}

fn head(body: &[u8], out: &mut [i64]) -> Option<i64> {
    out.fill(-1);
    let mut p = Parser { b: body, i: 0 };
    p.ws();
    p.expect(b'{')?;
    loop {
        p.ws();
        let key = p.top_key(out)?;
        if key == MESSAGES {
            out[2 * MESSAGES] = p.i as i64;
            return Some(p.i as i64);
        }
        p.top_value(key, out)?;
        p.ws();
        if p.next()? != b',' {
            return None; // the end, or anything else, before the messages
        }
    }
}

fn rest(
    body: &[u8],
    at: usize,
    spec: &[u8],
    max_records: i64,
    max_key_chars: i64,
    out: &mut [i64],
) -> Option<i64> {
    let mut p = Parser { b: body, i: at };
    let count = p.messages(spec, max_records, max_key_chars)?;
    out[2 * MESSAGES + 1] = p.i as i64;
    loop {
        p.ws();
        match p.next()? {
            b'}' => break,
            b',' => {
                p.ws();
                let key = p.top_key(out)?;
                p.top_value(key, out)?;
            }
            _ => return None,
        }
    }
    p.ws();
    (p.i == p.b.len()).then_some(count)
}

fn parse_spec(spec: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    let mut i = 0;
    while i < spec.len() {
        let head = spec.get(i..i + 4)?;
        let (kind, mode) = (head[0], head[1]);
        let len = u16::from_le_bytes([head[2], head[3]]) as usize;
        let name = spec.get(i + 4..i + 4 + len)?;
        if kind > KIND_DATETIME || mode > MODE_ANY {
            return None;
        }
        fields.push(Field { name, kind, mode });
        i += 4 + len;
    }
    Some(fields)
}

#[derive(PartialEq)]
enum Number {
    Int64,  // an integer literal within i64
    Finite, // any other number a float holds
}

/// Which fields the current record has given: marked with the record's number, so that starting a
/// record costs nothing however many fields the schema declares.
struct Seen {
    marks: Vec<u64>,
    needed: Vec<bool>,
    needed_total: usize,
    needed_seen: usize,
    record: u64,
}

impl Seen {
    fn new(fields: &[Field]) -> Seen {
        let needed: Vec<bool> = fields
            .iter()
            .map(|f| !matches!(f.mode, MODE_ABSENT_OR_VALUE | MODE_ANY))
            .collect();
        let needed_total = needed.iter().filter(|&&n| n).count();
        Seen {
            marks: vec![0; fields.len()],
            needed,
            needed_total,
            needed_seen: 0,
            record: 0,
        }
    }

    fn next_record(&mut self) {
        self.record += 1;
        self.needed_seen = 0;
    }

    fn saw(&mut self, n: usize) {
        if self.marks[n] != self.record {
            self.marks[n] = self.record;
            if self.needed[n] {
                self.needed_seen += 1;
            }
        }
    }

    fn all_needed(&self) -> bool {
        self.needed_seen == self.needed_total
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// A string's bytes between its quotes, and whether it holds an escape.
struct Text<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A JSON string (the opening quote next): valid escapes (no lone surrogate), no control
    /// character, valid UTF-8.
    fn string(&mut self) -> Option<Text<'a>> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // the plain run up to the next byte that needs a look (a quote, a backslash, a control
            // character, or not ASCII), in one pass
            let run = self
                .b
                .get(self.i..)?
                .iter()
                .position(|&c| STOPS[c as usize])?;
            self.i += run;
            let c = self.next()?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let unit = self.hex4()?;
                            if (0xDC00..=0xDFFF).contains(&unit) {
                                return None; // a low surrogate alone
                            }
                            if (0xD800..=0xDBFF).contains(&unit) {
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                    return None;
                                }
                            }
                        }
                        _ => return None,
                    }
                }
                0..=0x1F => return None,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        let raw = &self.b[start..self.i - 1];
        if !ascii && std::str::from_utf8(raw).is_err() {
            return None;
        }
        Some(Text { raw, escaped })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut unit = 0u32;
        for &d in digits {
            unit = unit * 16 + (d as char).to_digit(16)?;
        }
        self.i += 4;
        Some(unit)
    }

    /// A JSON number (the grammar checked): whether it is an integer literal (no fraction, no
    /// exponent) within i64, or at least a finite f64.
    fn number(&mut self) -> Option<Number> {
        let start = self.i;
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let first = self.i;
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let integer_digits = self.i - first;
        let mut fraction_or_exponent = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            fraction_or_exponent = true;
            self.digit()?;
            self.digits();
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            fraction_or_exponent = true;
            exponent = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        if !fraction_or_exponent && integer_digits <= 18 {
            return Some(Number::Int64); // at most 18 digits: within i64 whatever the sign
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        if !fraction_or_exponent && text.parse::<i64>().is_ok() {
            return Some(Number::Int64);
        }
        // up to 300 integer digits and no exponent is finite (f64's largest is ~1.8e308); any other
        // (an exponent, or a longer literal, even without a fraction) is parsed to know
        let finite = if exponent || integer_digits > 300 {
            text.parse::<f64>().ok()?.is_finite()
        } else {
            true
        };
        finite.then_some(Number::Finite)
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// A messages array (the opening bracket next), each message proven against `spec`: how many.
    fn messages(&mut self, spec: &[u8], max_records: i64, max_key_chars: i64) -> Option<i64> {
        let fields = parse_spec(spec)?;
        let index: HashMap<&[u8], usize> = fields
            .iter()
            .enumerate()
            .map(|(n, f)| (f.name, n))
            .collect();
        if index.len() != fields.len() {
            return None;
        }
        let mut seen = Seen::new(&fields);
        self.expect(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            return None; // no messages: the slow path answers
        }
        let mut count: i64 = 0;
        loop {
            self.message(&fields, &index, &mut seen, max_key_chars)?;
            count += 1;
            if count > max_records {
                return None;
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(count),
                _ => return None,
            }
        }
    }

    /// A top-level key (its index in `TOP_KEYS`) and the colon after it; None for another key, one
    /// already seen (`out`), or one written with escapes.
    fn top_key(&mut self, out: &[i64]) -> Option<usize> {
        let key = self.string()?;
        if key.escaped {
            return None;
        }
        let n = TOP_KEYS.iter().position(|&k| k == key.raw)?;
        if out[2 * n] != -1 {
            return None;
        }
        self.ws();
        self.expect(b':')?;
        self.ws();
        Some(n)
    }

    fn top_value(&mut self, key: usize, out: &mut [i64]) -> Option<()> {
        if key == MESSAGES {
            return None; // (only read by `messages`)
        }
        let start = self.i;
        self.skip(0)?;
        out[2 * key] = start as i64;
        out[2 * key + 1] = self.i as i64;
        Some(())
    }

    /// Any JSON value, checked and passed over.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => self.number().map(|_| ()),
        }
    }

    fn message(
        &mut self,
        fields: &[Field],
        index: &HashMap<&[u8], usize>,
        seen: &mut Seen,
        max_key_chars: i64,
    ) -> Option<()> {
        self.expect(b'{')?;
        let (mut action, mut sequence, mut data) = (false, false, false);
        self.ws();
        if self.peek()? == b'}' {
            return None;
        }
        loop {
            self.ws();
            let key = self.string()?;
            if key.escaped {
                return None;
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            match key.raw {
                b"action" => {
                    let text = self.string()?;
                    if text.escaped || text.raw != b"upsert" {
                        return None;
                    }
                    action = true;
                }
                b"sequence" => {
                    if self.peek()? == b'-' || self.number()? != Number::Int64 {
                        return None; // ("-0" too: not worth proving)
                    }
                    sequence = true;
                }
                b"data" => {
                    self.data(fields, index, seen, max_key_chars)?;
                    data = true;
                }
                b"time_extracted" => {
                    self.string()?;
                }
                _ => return None,
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        (action && sequence && data).then_some(())
    }

    fn data(
        &mut self,
        fields: &[Field],
        index: &HashMap<&[u8], usize>,
        seen: &mut Seen,
        max_key_chars: i64,
    ) -> Option<()> {
        self.expect(b'{')?;
        seen.next_record();
        let mut hint = 0;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.ws();
                let key = self.string()?;
                let n = if key.escaped {
                    *index.get(unescape(key.raw)?.as_bytes())?
                } else if fields.get(hint).is_some_and(|f| f.name == key.raw) {
                    hint // the field after the last one: records usually keep one order
                } else {
                    *index.get(key.raw)?
                };
                hint = n + 1;
                self.ws();
                self.expect(b':')?;
                self.ws();
                self.value(&fields[n], max_key_chars)?;
                seen.saw(n);
                self.ws();
                match self.next()? {
                    b',' => continue,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        seen.all_needed().then_some(())
    }

    fn value(&mut self, field: &Field, max_key_chars: i64) -> Option<()> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return matches!(field.mode, MODE_NULL_OR_VALUE | MODE_ANY).then_some(());
        }
        match field.kind {
            KIND_INTEGER => (self.number()? == Number::Int64).then_some(()),
            KIND_NUMBER => self.number().map(|_| ()),
            KIND_BOOLEAN => match self.peek()? {
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                _ => None,
            },
            KIND_STRING => {
                let text = self.string()?;
                if field.mode == MODE_KEY {
                    let chars = if text.escaped {
                        unescape(text.raw)?.chars().count() as i64
                    } else {
                        text.raw.iter().filter(|&&c| c & 0xC0 != 0x80).count() as i64
                    };
                    if chars > max_key_chars {
                        return None;
                    }
                }
                Some(())
            }
            KIND_DATETIME => {
                let text = self.string()?;
                (!text.escaped && common_timestamp(text.raw)).then_some(())
            }
            _ => None,
        }
    }
}

/// A string already checked by `Parser::string` with its escapes resolved (None: not resolvable).
fn unescape(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let mut unit = hex(&mut chars)?;
                if (0xD800..=0xDBFF).contains(&unit) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let low = hex(&mut chars)?;
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low.checked_sub(0xDC00)?);
                }
                out.push(char::from_u32(unit)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex(chars: &mut std::str::Chars) -> Option<u32> {
    let mut unit = 0;
    for _ in 0..4 {
        unit = unit * 16 + chars.next()?.to_digit(16)?;
    }
    Some(unit)
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,6}][Z|z|+HH:MM|-HH:MM]`, a real date and time of years
/// 1000-9999 and an offset within ±14:00 on a quarter hour: the shapes clients send, which every
/// path reads the same (no offset: UTC).
fn common_timestamp(t: &[u8]) -> bool {
    if t.len() < 19 {
        return false;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = t.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, &d| n * 10 + (d - b'0') as u32))
    };
    let shape = t[4] == b'-'
        && t[7] == b'-'
        && matches!(t[10], b'T' | b't' | b' ')
        && t[13] == b':'
        && t[16] == b':';
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    if !shape
        || !(1000..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month as usize - 1];
    if day < 1 || day > days {
        return false;
    }
    let mut rest = &t[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return false;
        }
        rest = &rest[1 + digits..];
    }
    match rest {
        b"" | b"Z" | b"z" => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let all = [*h1, *h2, *m1, *m2];
            if !all.iter().all(u8::is_ascii_digit) {
                return false;
            }
            let hours = ((h1 - b'0') * 10 + (h2 - b'0')) as u32;
            let minutes = ((m1 - b'0') * 10 + (m2 - b'0')) as u32;
            hours * 60 + minutes <= 14 * 60 && minutes.is_multiple_of(15)
        }
        _ => false,
    }
}
