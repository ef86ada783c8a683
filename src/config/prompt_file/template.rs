//! The body as the template engine sees it. meshops renders Jinja2 (the
//! Prompty default); a body written for another format is rendered by
//! Jinja2 where its syntax means the same there (a Mustache body of
//! variables, comments and sections is rewritten to Jinja2), and otherwise
//! sent as written, with no substitution. Either way the file loads and
//! `meshops validate` names the format.

use std::borrow::Cow;

use super::header::TemplateEngine;

/// Format kinds rendered natively.
pub(crate) const JINJA_FORMATS: [&str; 2] = ["jinja2", "jinja"];

/// How a body in `format` is rendered.
pub(crate) fn engine_for(format: &str, body: &str) -> TemplateEngine {
    if JINJA_FORMATS.contains(&format) {
        TemplateEngine::Jinja2
    } else if format == "mustache" {
        match mustache_to_jinja(body) {
            Some(source) if parses(&source) => TemplateEngine::MustacheAsJinja,
            _ => TemplateEngine::Verbatim,
        }
    } else if parses(body) {
        TemplateEngine::Jinja2
    } else {
        TemplateEngine::Verbatim
    }
}

/// What a validation line says happens to a body in an unsupported format.
pub(crate) fn engine_note(engine: TemplateEngine) -> &'static str {
    match engine {
        TemplateEngine::Jinja2 | TemplateEngine::MustacheAsJinja => "rendered as Jinja2",
        TemplateEngine::Verbatim => "sent as written, without substitution",
    }
}

/// The Jinja2 source the engine compiles for `body`. Line numbers are kept
/// (a removed comment keeps its line breaks), so errors name file lines.
pub(crate) fn source(engine: TemplateEngine, body: &str) -> Cow<'_, str> {
    match engine {
        TemplateEngine::Jinja2 => Cow::Borrowed(body),
        TemplateEngine::MustacheAsJinja => mustache_to_jinja(body).map_or(Cow::Borrowed(body), Cow::Owned),
        TemplateEngine::Verbatim => Cow::Owned(escape(body)),
    }
}

/// Whether `body` uses a tag only Mustache has (a section, inverted
/// section, partial, comment, unescaped or delimiter tag) and no Jinja2
/// statement.
pub(crate) fn looks_like_mustache(body: &str) -> bool {
    const MUSTACHE_ONLY: [&str; 8] = ["{{#", "{{^", "{{/", "{{>", "{{!", "{{&", "{{{", "{{="];
    !body.contains("{%") && MUSTACHE_ONLY.iter().any(|tag| body.contains(tag))
}

/// Whether `source` parses as Jinja2.
pub(crate) fn parses(source: &str) -> bool {
    minijinja::Environment::new().template_from_str(source).is_ok()
}

/// `text` as a Jinja2 template that renders it unchanged: each `{` that
/// would open a tag is written as an expression printing `{`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && matches!(chars.peek(), Some('{' | '%' | '#')) {
            out.push_str("{{ '{' }}");
        } else {
            out.push(c);
        }
    }
    out
}

/// A Mustache body as Jinja2: variables (`{{name}}`, `{{{name}}}`,
/// `{{&name}}`, dotted names, `{{.}}` in a section), comments (`{{! … }}`),
/// sections (`{{#name}}…{{/name}}`: once per item of a list, once for any
/// other truthy value, never for a falsy one) and inverted sections
/// (`{{^name}}…{{/name}}`). A name inside a section is looked up in the
/// section's value first, then outwards, as Mustache does. `None` for
/// partials, delimiter changes and unbalanced sections, which have no plain
/// Jinja2 spelling. Text outside tags is escaped for Jinja2, and a section
/// tag alone on its line takes the line with it (Mustache's standalone
/// rule).
fn mustache_to_jinja(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len() + body.len() / 4);
    // Open sections, innermost last: (name, loop variable or None for an
    // inverted section).
    let mut open_sections: Vec<(&str, Option<String>)> = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        out.push_str(&escape(&rest[..open]));
        let after = &rest[open + 2..];
        let (inner, close_len) = match after.strip_prefix('{') {
            Some(triple) => (&triple[..triple.find("}}}")?], 3),
            None => (&after[..after.find("}}")?], 2),
        };
        let mut consumed = open + 2 + inner.len() + close_len + usize::from(close_len == 3);
        let tag = inner.trim();
        let scopes: Vec<&str> = open_sections.iter().filter_map(|(_, var)| var.as_deref()).collect();
        if close_len == 3 {
            out.push_str(&print(lookup(tag, &scopes)?));
        } else if let Some(comment) = tag.strip_prefix('!') {
            // Keep the comment's line breaks so later lines keep their numbers.
            out.push_str(&"\n".repeat(comment.matches('\n').count()));
        } else if let Some(name) = tag.strip_prefix('/').map(str::trim) {
            consumed += standalone(&mut out, &rest[consumed..]);
            match open_sections.pop() {
                Some((opened, var)) if opened == name => {
                    out.push_str(if var.is_some() { "{% endfor %}" } else { "{% endif %}" });
                }
                _ => return None,
            }
        } else if let Some(section) = tag.strip_prefix(['#', '^']) {
            let name = section.trim();
            let (prelude, value) = lookup(name, &scopes)?;
            consumed += standalone(&mut out, &rest[consumed..]);
            out.push_str(&prelude);
            let depth = open_sections.len();
            if tag.starts_with('#') {
                let (set, var) = (format!("__mustache_s{depth}"), format!("__mustache_m{depth}"));
                out.push_str(&format!(
                    "{{% set {set} = {value} %}}{{% for {var} in ({set} if {set} is sequence else ([{set}] if {set} else [])) %}}"
                ));
                open_sections.push((name, Some(var)));
            } else {
                out.push_str(&format!("{{% if not {value} %}}"));
                open_sections.push((name, None));
            }
        } else if let Some(name) = tag.strip_prefix('&') {
            out.push_str(&print(lookup(name.trim(), &scopes)?));
        } else {
            out.push_str(&print(lookup(tag, &scopes)?));
        }
        rest = &rest[consumed..];
    }
    out.push_str(&escape(rest));
    open_sections.is_empty().then_some(out)
}

/// A looked-up name printed: its statements, then the expression.
fn print((prelude, expression): (String, String)) -> String {
    format!("{prelude}{{{{ {expression} }}}}")
}

/// For a section tag alone on its line: drops the blanks before it (already
/// in `out`) and returns how much of `after` (the blanks and the line break
/// after it) to skip. Zero, and nothing dropped, when the tag shares its
/// line with other text.
fn standalone(out: &mut String, after: &str) -> usize {
    let line_start = out.rfind('\n').map_or(0, |i| i + 1);
    if !out[line_start..].chars().all(|c| c == ' ' || c == '\t') {
        return 0;
    }
    let blanks = after.len() - after.trim_start_matches([' ', '\t']).len();
    let skipped = match &after[blanks..] {
        text if text.starts_with("\r\n") => blanks + 2,
        text if text.starts_with('\n') => blanks + 1,
        "" => blanks,
        _ => return 0,
    };
    out.truncate(line_start);
    skipped
}

/// The Jinja2 for a Mustache name: statements to run first (empty unless
/// the name is dotted) and the expression. `.` is the innermost section's
/// value; otherwise the first part is looked up in the open sections'
/// values, innermost first, then in the inputs, and each further part is a
/// field of what was found (empty when there is none, as in Mustache).
/// `None` for a name Jinja2 cannot spell.
fn lookup(name: &str, scopes: &[&str]) -> Option<(String, String)> {
    if name == "." {
        return scopes.last().map(|var| (String::new(), (*var).to_string()));
    }
    let mut parts = name.split('.');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let identifier = |part: &str| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !identifier(first) || !rest.iter().all(|part| identifier(part)) {
        return None;
    }
    let mut expression = first.to_string();
    for var in scopes {
        expression = format!("({var}.{first} if {var} is mapping and '{first}' in {var} else {expression})");
    }
    if rest.is_empty() {
        return Some((String::new(), expression));
    }
    // A field of a missing value is an error in Jinja2, so each step checks
    // it has a mapping (`__mustache_none` is never defined: it renders empty).
    const VALUE: &str = "__mustache_v";
    let mut prelude = format!("{{% set {VALUE} = {expression} %}}");
    for part in rest {
        prelude.push_str(&format!(
            "{{% set {VALUE} = ({VALUE}.{part} if {VALUE} is mapping else __mustache_none) %}}"
        ));
    }
    Some((prelude, VALUE.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mustache_variables_and_comments_become_jinja() {
        let body = "Hi {{ name }} {{{raw}}} {{& a.b }}\n{{! a\ncomment }}\n{% not jinja %}";
        let jinja = mustache_to_jinja(body).unwrap();
        assert!(jinja.starts_with("Hi {{ name }} {{ raw }} "), "{jinja}");
        assert!(jinja.ends_with("{{ __mustache_v }}\n\n\n{{ '{' }}% not jinja %}"), "{jinja}");
        let env = minijinja::Environment::new();
        let data = serde_json::json!({"name": "N", "raw": "<r>", "a": {"b": "B"}});
        assert_eq!(env.render_str(&jinja, data).unwrap(), "Hi N <r> B\n\n\n{% not jinja %}");
        // A field of a missing value is empty, as in Mustache.
        let data = serde_json::json!({"name": "N", "raw": "<r>"});
        assert_eq!(env.render_str(&jinja, data).unwrap(), "Hi N <r> \n\n\n{% not jinja %}");
        assert_eq!(engine_for("mustache", body), TemplateEngine::MustacheAsJinja);
        for other in ["{{> part}}", "{{=<% %>=}}", "{{.}}", "{{ open", "{{#a}}x", "{{#a}}x{{/b}}", "{{/a}}"] {
            assert_eq!(mustache_to_jinja(other), None, "{other}");
            assert_eq!(engine_for("mustache", other), TemplateEngine::Verbatim, "{other}");
        }
    }

    /// Sections render as Mustache renders them (the expected texts are
    /// what the Mustache spec's rules give for these inputs).
    #[test]
    fn mustache_sections_render_as_mustache() {
        let render = |body: &str, data: serde_json::Value| {
            assert_eq!(engine_for("mustache", body), TemplateEngine::MustacheAsJinja, "{body}");
            let source = source(TemplateEngine::MustacheAsJinja, body);
            let env = minijinja::Environment::new();
            env.render_str(&source, data).unwrap_or_else(|e| panic!("{body}: {e}\n{source}"))
        };
        let rules = "# context\n{{#rules}}\n- {{rule}}\n{{/rules}}\nuser:\n{{input}}\n";
        let data = serde_json::json!({"rules": [{"rule": "be brief"}, {"rule": "cite"}], "input": "hi"});
        assert_eq!(render(rules, data), "# context\n- be brief\n- cite\nuser:\nhi");
        assert_eq!(render(rules, serde_json::json!({"rules": [], "input": "x"})), "# context\nuser:\nx");
        // Inner names fall back to outer scopes; `.` is the item; a truthy
        // non-list renders once with its fields in scope; `^` inverts.
        let body = "{{#items}}{{.}}/{{who}} {{/items}}{{#user}}{{name}}@{{who}}{{/user}}{{^none}}!{{/none}}";
        let data = serde_json::json!({"items": ["a", "b"], "who": "w", "user": {"name": "ada"}, "none": []});
        assert_eq!(render(body, data), "a/w b/w ada@w!");
        let body = "{{#flag}}on{{/flag}}{{^flag}}off{{/flag}} {{#u.tags}}[{{.}}]{{/u.tags}}";
        assert_eq!(render(body, serde_json::json!({"flag": false, "u": {"tags": ["x", "y"]}})), "off [x][y]");
        assert_eq!(render(body, serde_json::json!({"flag": "yes"})), "on ");
        // Nested sections: the innermost value wins, then the next one out.
        let body = "{{#a}}{{#b}}{{n}}{{m}};{{/b}}{{/a}}";
        let data = serde_json::json!({"a": {"m": 1, "b": [{"n": 2}, {"n": 3, "m": 4}]}, "m": 9});
        assert_eq!(render(body, data), "21;34;");
    }

    #[test]
    fn verbatim_bodies_render_unchanged() {
        let body = "user:\n{{#x}} {% y %} {# z #} { {{";
        let source = source(TemplateEngine::Verbatim, body);
        let env = minijinja::Environment::new();
        assert_eq!(env.render_str(&source, ()).unwrap(), body);
        assert_eq!(engine_for("handlebars", "{{ a }}"), TemplateEngine::Jinja2);
        assert_eq!(engine_for("f-string", "{% x"), TemplateEngine::Verbatim);
        assert_eq!(engine_for("jinja2", "{% x"), TemplateEngine::Jinja2);
    }
}
