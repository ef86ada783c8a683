//! The body as the template engine sees it. meshops renders Jinja2 (the
//! Prompty default); a body written for another format is rendered by
//! Jinja2 where its syntax means the same there (a Mustache body of
//! variables and comments is rewritten to Jinja2), and otherwise sent as
//! written, with no substitution. Either way the file loads and
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

/// A Mustache body as Jinja2, when it uses only variables (`{{name}}`,
/// `{{{name}}}`, `{{&name}}`, dotted names) and comments (`{{! … }}`);
/// `None` for sections, partials and delimiter changes, whose meaning has
/// no plain Jinja2 spelling. Text outside tags is escaped for Jinja2.
fn mustache_to_jinja(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        out.push_str(&escape(&rest[..open]));
        let after = &rest[open + 2..];
        let (inner, close_len) = match after.strip_prefix('{') {
            Some(triple) => (&triple[..triple.find("}}}")?], 3),
            None => (&after[..after.find("}}")?], 2),
        };
        let consumed = open + 2 + inner.len() + close_len + usize::from(close_len == 3);
        let tag = inner.trim();
        if close_len == 3 {
            out.push_str(&variable(tag)?);
        } else if let Some(comment) = tag.strip_prefix('!') {
            // Keep the comment's line breaks so later lines keep their numbers.
            out.push_str(&"\n".repeat(comment.matches('\n').count()));
        } else if let Some(name) = tag.strip_prefix('&') {
            out.push_str(&variable(name.trim())?);
        } else {
            out.push_str(&variable(tag)?);
        }
        rest = &rest[consumed..];
    }
    out.push_str(&escape(rest));
    Some(out)
}

/// `{{ name }}` for a Mustache variable name (dotted names included).
fn variable(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    valid.then(|| format!("{{{{ {name} }}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mustache_variables_and_comments_become_jinja() {
        let body = "Hi {{ name }} {{{raw}}} {{& a.b }}\n{{! a\ncomment }}\n{% not jinja %}";
        let jinja = mustache_to_jinja(body).unwrap();
        assert_eq!(jinja, "Hi {{ name }} {{ raw }} {{ a.b }}\n\n\n{{ '{' }}% not jinja %}");
        assert!(parses(&jinja));
        assert_eq!(engine_for("mustache", body), TemplateEngine::MustacheAsJinja);
        for other in
            ["{{#items}}x{{/items}}", "{{^x}}y{{/x}}", "{{> part}}", "{{=<% %>=}}", "{{.}}", "{{ open"]
        {
            assert_eq!(mustache_to_jinja(other), None, "{other}");
            assert_eq!(engine_for("mustache", other), TemplateEngine::Verbatim, "{other}");
        }
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
