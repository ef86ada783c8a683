//! Splitting rendered text into chat messages at role marker lines.
//!
//! A marker is a line holding only a role word and a colon (`system:`,
//! `user:`, `assistant:`, `developer:`, `human:`, `tool:`), in any case,
//! optionally after a `#` and surrounded by whitespace, optionally with
//! Prompty v2 attributes before the colon (`user[name=ann]:`, which are
//! ignored). `# Customer` is a Markdown heading, not a marker: only the
//! role words count.

use minijinja::{Error, Output, State, Value};

use crate::llm::{ChatMessage, Role};

/// Put at the start of a marker-looking line inside an interpolated value so
/// the splitter does not take it for a marker; removed from message content.
/// A private-use character, so it never means anything in real text.
const GUARD: char = '\u{E000}';
/// The first byte of [`GUARD`] in UTF-8.
const GUARD_LEAD: u8 = {
    let mut utf8 = [0u8; 4];
    GUARD.encode_utf8(&mut utf8);
    utf8[0]
};

/// The role a marker line names, if `line` is one.
pub(crate) fn marker_role(line: &str) -> Option<Role> {
    let line = line.trim();
    let line = line.strip_prefix('#').map_or(line, str::trim_start);
    let word = line.strip_suffix(':')?.trim_end();
    // `role[key=value, …]`: the attributes name nothing meshops sends.
    let word = match word.strip_suffix(']').and_then(|w| w.split_once('[')) {
        Some((word, attributes)) if !attributes.contains(['[', ']']) => word.trim_end(),
        _ => word,
    };
    role_named(word)
}

/// The role a role word names (`system`, `Human`, …), in any case.
pub(crate) fn role_named(word: &str) -> Option<Role> {
    const ROLES: [(&str, Role); 6] = [
        ("system", Role::System),
        ("developer", Role::System),
        ("user", Role::User),
        ("human", Role::User),
        ("assistant", Role::Assistant),
        ("tool", Role::Tool),
    ];
    ROLES.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)).map(|(_, role)| *role)
}

/// Whether any line of `text` is a marker. Only a line whose last
/// non-blank character is a colon can be one, so this finds the colons
/// (a vectorised byte search) and looks past each only while there are
/// blanks: `a: b`, the usual colon, is passed over at the next letter.
/// Only a colon with nothing but blanks to its line's end has its line
/// read.
pub(crate) fn has_marker(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b':', bytes).any(|colon| {
        let mut end = colon + 1;
        loop {
            match bytes.get(end) {
                None | Some(b'\n') => break,
                // ASCII blanks as `char::is_whitespace` (so `trim`) has them.
                Some(b' ' | b'\t' | b'\r' | 0x0B | 0x0C) => end += 1,
                Some(b) if b.is_ascii() => return false,
                // Past ASCII, `end` is at a character's start: decode it.
                Some(_) => match text[end..].chars().next() {
                    Some(c) if c.is_whitespace() => end += c.len_utf8(),
                    _ => return false,
                },
            }
        }
        let start = memchr::memrchr(b'\n', &bytes[..colon]).map_or(0, |n| n + 1);
        marker_role(&text[start..end]).is_some()
    })
}

/// Splits rendered text into messages. Text before the first marker, when
/// not blank, is a system message; contents are trimmed; empty messages are
/// dropped.
pub(crate) fn split(text: &str) -> Vec<ChatMessage> {
    split_from(text, Role::System)
}

/// [`split`] for text that starts inside a message of `role` (a part of a
/// body that followed a marker).
pub(crate) fn split_from(text: &str, role: Role) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    // Most parts hold no marker: one message, without a pass line by line
    // (which also turns `\r\n` into `\n`, hence the second test).
    if !has_marker(text) && memchr::memchr(b'\r', text.as_bytes()).is_none() {
        push(&mut out, role, text);
        return out;
    }
    let mut role = role;
    let mut content = String::new();
    for line in text.lines() {
        if let Some(next) = marker_role(line) {
            push(&mut out, role, &content);
            role = next;
            content.clear();
        } else {
            content.push_str(line);
            content.push('\n');
        }
    }
    push(&mut out, role, &content);
    out
}

/// The body's template source cut at its marker lines: the text before the
/// first marker (a system part when not blank), then one part per marker,
/// without the marker line itself. Each part comes with the number of body
/// lines before it.
pub(crate) fn split_source(body: &str) -> Vec<(Role, usize, String)> {
    let mut parts = vec![(Role::System, 0, String::new())];
    for (n, line) in body.split_inclusive('\n').enumerate() {
        if let Some(role) = marker_role(line) {
            parts.push((role, n + 1, String::new()));
        } else if let Some((_, _, text)) = parts.last_mut() {
            text.push_str(line);
        }
    }
    parts
}

fn push(out: &mut Vec<ChatMessage>, role: Role, content: &str) {
    // Guards are rare: copy the text once, and twice only when one is there.
    // A byte search for the guard's first UTF-8 byte (shared only by other
    // private-use characters) rules most texts out without a string search.
    let unguarded;
    let content = if memchr::memchr(GUARD_LEAD, content.as_bytes()).is_some() && content.contains(GUARD) {
        unguarded = content.replace(GUARD, "");
        unguarded.trim()
    } else {
        content.trim()
    };
    if !content.is_empty() {
        out.push(ChatMessage::new(role, content.to_string()));
    }
}

/// The formatter for `{{ … }}`: strings are written with any marker-looking
/// line guarded, so input values cannot open messages of their own; other
/// values are formatted as usual.
pub(crate) fn format_value(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let Some(text) = value.as_str() else {
        return minijinja::escape_formatter(out, state, value);
    };
    if !has_marker(text) {
        return out.write_str(text).map_err(Error::from);
    }
    let mut guarded = String::with_capacity(text.len() + 4);
    guard_lines(&mut guarded, text);
    out.write_str(&guarded).map_err(Error::from)
}

/// Appends `text` to `out` with each marker-looking line guarded, as
/// [`format_value`] writes a string.
pub(crate) fn push_guarded(out: &mut String, text: &str) {
    if has_marker(text) {
        guard_lines(out, text);
    } else {
        out.push_str(text);
    }
}

/// Appends `text` line by line, a guard before each line that is a marker.
fn guard_lines(out: &mut String, text: &str) {
    for piece in text.split_inclusive('\n') {
        if marker_role(piece).is_some() {
            out.push(GUARD);
        }
        out.push_str(piece);
    }
}
