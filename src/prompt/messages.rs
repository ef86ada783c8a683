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
/// non-blank character is a colon can be one, so this looks for colons
/// (one byte search over the text) and, at each, only at what follows it:
/// a colon followed by anything but blanks up to its line's end (the
/// usual case, `a: b`) is passed over after a byte or two. Text without
/// a colon costs the search alone.
pub(crate) fn has_marker(text: &str) -> bool {
    let mut from = 0;
    while let Some(at) = text[from..].find(':') {
        let colon = from + at;
        let after = &text[colon + 1..];
        // Blanks up to the line's end (or the text's) make a candidate.
        let blank_to_end = after.chars().find(|&c| c == '\n' || !c.is_whitespace()).is_none_or(|c| c == '\n');
        if blank_to_end {
            let start = text[..colon].rfind('\n').map_or(0, |n| n + 1);
            let end = after.find('\n').map_or(text.len(), |n| colon + 1 + n);
            if marker_role(&text[start..end]).is_some() {
                return true;
            }
        }
        from = colon + 1;
    }
    false
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
    if !has_marker(text) && !text.contains('\r') {
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
    let unguarded;
    let content = if content.contains(GUARD) {
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
    push_guarded(&mut guarded, text);
    out.write_str(&guarded).map_err(Error::from)
}

/// Appends `text` to `out` with each marker-looking line guarded, as
/// [`format_value`] writes a string.
pub(crate) fn push_guarded(out: &mut String, text: &str) {
    if !has_marker(text) {
        out.push_str(text);
        return;
    }
    for piece in text.split_inclusive('\n') {
        if marker_role(piece).is_some() {
            out.push(GUARD);
        }
        out.push_str(piece);
    }
}
