//! Text a job returns (skip reasons, error texts, unmapped values, log lines),
//! made safe to store and log the moment the host receives it.
//!
//! A job may hold a child's record; whatever it writes into a text could be a
//! name or a date of birth, a 20 MiB string, or terminal escape sequences.
//! So every such string is:
//!
//! - **bounded**: cut to [`RECEIVE_MAX_CHARS`] before it is looked at, then to
//!   [`TEXT_MAX_CHARS`] (texts) or [`CODE_MAX_CHARS`] (codes);
//! - **reduced to codes**: split into words at whitespace (a `,` or `;` ending
//!   a word is kept as a separator); a word is kept only when it has the
//!   shape of a code, `^[A-Za-z0-9_.:/#-]{1,64}$` ([`is_code`]), which leaves
//!   no room for control characters, quotes or anything a terminal
//!   interprets;
//! - **checked against the record**: a word that equals (ignoring case) a
//!   value of the record the job was given is redacted, and so is a word or
//!   part of a short value (at most 4 words: a name, a date, a place); so is
//!   a word with a part (between punctuation, 2 characters or more) that
//!   the record holds with a digit, or with a capital letter in a short
//!   value (names, dates, numbers), see [`RecordTerms`]. Free text in the
//!   record (descriptions, notes) adds only its parts with a digit, so the
//!   common words of its sentences stay usable in reasons.
//!
//! A word that fails is replaced by [`REDACTED`] (a run of them by one).
//! Codes, field paths and table names pass, so `not-referred: no decision
//! yet`, `case.case_id` or `inbound-service-types` reach the operator as
//! written. The rule is documented for job authors in jobs/README.md.

use std::collections::HashSet;

/// What replaces a word that is not a code or that the record holds.
pub const REDACTED: &str = "<redacted>";

/// Longest code (skip code, field path, table name, log field value).
pub const CODE_MAX_CHARS: usize = 64;

/// Longest text kept (reason, message), after redaction.
pub const TEXT_MAX_CHARS: usize = 200;

/// What the host looks at of any string a job returns: a job that returns
/// 20 MiB costs this much to read, not more.
pub const RECEIVE_MAX_CHARS: usize = 2048;

/// Job log lines kept per record; the rest are counted and reported once.
pub const MAX_LOG_LINES_PER_RECORD: u32 = 20;

/// Whether `s` has the shape of a code: `^[A-Za-z0-9_.:/#-]{1,64}$`.
pub fn is_code(s: &str) -> bool {
    (1..=CODE_MAX_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/#-".contains(&b))
}

/// The parts of a word between punctuation, 2 characters or more.
fn parts(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|p| p.chars().count() >= 2)
}

/// Values of at most this many words are names, dates, places or codes;
/// longer ones are free text.
const SHORT_VALUE_WORDS: usize = 4;

/// What the record a job was given holds, to recognise it in the job's text.
#[derive(Debug, Default, Clone)]
pub struct RecordTerms {
    /// Every string or number value, each of its words and parts, lowercased.
    all: HashSet<String>,
    /// Parts that carry a digit or a capital letter in the record (names,
    /// dates, ids), lowercased: redacted even inside a longer word.
    strong: HashSet<String>,
}

impl RecordTerms {
    /// Terms of a record (JSON). Text that is not JSON counts as one value.
    pub fn of_record(record: &str) -> Self {
        let mut terms = Self::default();
        match serde_json::from_str::<serde_json::Value>(record) {
            Ok(v) => terms.add_value(&v),
            Err(_) => terms.add(record),
        }
        terms
    }

    /// Terms of several records (a `run-batch` call's, for its log lines).
    pub fn of_records<'a>(records: impl IntoIterator<Item = &'a str>) -> Self {
        let mut terms = Self::default();
        for r in records {
            let one = Self::of_record(r);
            terms.all.extend(one.all);
            terms.strong.extend(one.strong);
        }
        terms
    }

    fn add_value(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::String(s) => self.add(s),
            serde_json::Value::Number(n) => self.add(&n.to_string()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| self.add_value(i)),
            serde_json::Value::Object(map) => map.values().for_each(|i| self.add_value(i)),
            serde_json::Value::Bool(_) | serde_json::Value::Null => {}
        }
    }

    fn add(&mut self, s: &str) {
        let s = s.trim();
        if s.is_empty() {
            return;
        }
        self.all.insert(s.to_lowercase());
        let words: Vec<&str> = s.split_whitespace().collect();
        // A short value (a name, a date, a place, a code) gives all its words
        // and parts; free text (a description, a note) only its parts with a
        // digit: otherwise every common word of a sentence ("or", "ID" at
        // the start of one) would be redacted from every reason.
        let short = words.len() <= SHORT_VALUE_WORDS;
        // Words of one or two letters ("or", "of") only as whole values.
        let weak = |w: &str| short && w.chars().count() >= 3;
        for word in words {
            if weak(word) {
                self.all.insert(word.to_lowercase());
            }
            for part in parts(word) {
                let lower = part.to_lowercase();
                let digit = part.chars().any(char::is_numeric);
                if digit || (short && part.chars().any(char::is_uppercase)) {
                    self.strong.insert(lower.clone());
                }
                if weak(part) {
                    self.all.insert(lower);
                }
            }
        }
    }

    /// Whether the record holds `word` (see the module docs).
    fn holds(&self, word: &str) -> bool {
        let lower = word.to_lowercase();
        self.all.contains(&lower) || parts(&lower).any(|p| self.strong.contains(p))
    }
}

fn received(raw: &str) -> &str {
    match raw.char_indices().nth(RECEIVE_MAX_CHARS) {
        Some((at, _)) => &raw[..at],
        None => raw,
    }
}

/// A code (skip code, field path, table name, value): kept when it has the
/// shape of a code and the record does not hold it, else [`REDACTED`].
pub fn code(raw: &str, terms: &RecordTerms) -> String {
    let raw = received(raw);
    if is_code(raw) && !terms.holds(raw) {
        raw.to_string()
    } else {
        REDACTED.to_string()
    }
}

/// An unmapped value: the lookup key a mapping table lacks. The operator
/// needs it to add the row, and the record holds it by nature, so it is kept
/// when it has the shape of a code and no part of it is a record term that
/// carries a digit or a capital letter (names, dates, ids): a lower-case key
/// such as `alternative_care` passes, `Amina` or `2015-03-02` does not.
pub fn lookup_value(raw: &str, terms: &RecordTerms) -> String {
    let raw = received(raw);
    let strong = parts(raw).any(|p| terms.strong.contains(&p.to_lowercase()));
    if is_code(raw) && !strong && !raw.chars().any(|c| c.is_uppercase() || c.is_numeric()) {
        raw.to_string()
    } else {
        code(raw, terms)
    }
}

/// A text (reason, message): its words that are codes the record does not
/// hold, the others redacted, at most [`TEXT_MAX_CHARS`].
pub fn text(raw: &str, terms: &RecordTerms) -> String {
    let mut out = String::new();
    let mut last_redacted = false;
    for word in received(raw).split_whitespace() {
        // `a,b, c;` : each piece before a `,` or `;` is judged on its own.
        let mut judged = String::new();
        let mut all_redacted = true;
        for piece in word.split_inclusive([',', ';']) {
            let core = piece.trim_end_matches([',', ';']);
            let sep = &piece[core.len()..];
            let keep = core.is_empty() || (is_code(core) && !terms.holds(core));
            all_redacted &= !keep;
            judged.push_str(if keep { core } else { REDACTED });
            judged.push_str(sep);
        }
        if all_redacted && last_redacted {
            // A run of redacted words reads as one.
            continue;
        }
        let add = usize::from(!out.is_empty()) + judged.len();
        if out.len() + add > TEXT_MAX_CHARS {
            out.push('…');
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&judged);
        last_redacted = all_redacted;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"case":{"name":"Amina Yusuf","date_of_birth":"2015-03-02","sex":"female","status":"referred","age":9}}"#;

    #[test]
    fn an_unmapped_lookup_key_is_kept_and_a_name_or_date_is_not() {
        let terms = RecordTerms::of_record(RECORD);
        assert_eq!(lookup_value("female", &terms), "female");
        assert_eq!(lookup_value("alternative_care", &terms), "alternative_care");
        for leak in [
            "Amina",
            "amina",
            "2015-03-02",
            "Yusuf",
            "amina_yusuf",
            "a b",
        ] {
            assert_eq!(lookup_value(leak, &terms), REDACTED, "{leak}");
        }
        // Not in the record: a code-shaped value passes as any code does.
        assert_eq!(lookup_value("BID-7", &terms), "BID-7");
    }

    #[test]
    fn code_shape_is_exactly_the_documented_one() {
        for ok in [
            "a",
            "not-referred",
            "case.case_id",
            "a:b/c#d_e",
            &"x".repeat(64),
        ] {
            assert!(is_code(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "é",
            "a\u{1b}[31m",
            "\"x\"",
            "(record)",
            &"x".repeat(65),
        ] {
            assert!(!is_code(bad), "{bad}");
        }
    }

    #[test]
    fn names_and_dates_of_the_record_are_redacted() {
        let terms = RecordTerms::of_record(RECORD);
        assert_eq!(
            text("child Amina Yusuf born 2015-03-02 sex female", &terms),
            "child <redacted> born <redacted> sex <redacted>"
        );
        // Inside a longer word, and in another case or form.
        assert_eq!(text("x AMINA-x dob:2015/03/02", &terms), "x <redacted>");
        assert_eq!(code("Yusuf", &terms), REDACTED);
        // A status code the record holds in lower case stays inside a code.
        assert_eq!(code("not-referred", &terms), "not-referred");
        assert_eq!(code("referred", &terms), REDACTED);
    }

    #[test]
    fn free_text_control_characters_and_size_are_bounded() {
        let none = RecordTerms::default();
        assert_eq!(
            text("required fields missing or empty: a.b, c.d", &none),
            "required fields missing or empty: a.b, c.d"
        );
        assert_eq!(text("composite a,b,c; x", &none), "composite a,b,c; x");
        assert_eq!(
            text("\u{1b}[2J\u{1b}[31mred\nnext", &none),
            "<redacted> next"
        );
        assert_eq!(text("not \"<x>#<y>\" ok", &none), "not <redacted> ok");
        let huge = "word ".repeat(4 << 20);
        let t = text(&huge, &none);
        assert!(
            t.len() <= TEXT_MAX_CHARS + '…'.len_utf8() && t.ends_with('…'),
            "{t}"
        );
        assert_eq!(code(&"x".repeat(20 << 20), &none), REDACTED);
    }
}
