//! Prompty files: YAML front matter and a role-marked, Jinja-templated body.
//!
//! A Prompty file (Microsoft's prompt format; v1 shown, v2 reads the same
//! way, see `config::prompt_file`) looks like
//!
//! ```text
//! ---
//! name: ExamplePrompt
//! model:
//!   api: chat
//!   parameters:
//!     max_tokens: 3000
//! ---
//! system:
//! You help {{firstName}}.
//!
//! user:
//! {{question}}
//! ```
//!
//! The file itself — front matter as plain data, template text — is
//! configuration: [`PromptFile`] (in `config`) reads and checks it, so
//! `meshops validate` names every broken prompt before anything starts.
//! This layer compiles the body ([`Prompty::compile`], once per prompt, when
//! its agent or judge starts) and renders it per request
//! ([`Prompty::render`]): it renders the body with minijinja and only
//! afterwards splits the text into [`ChatMessage`]s at role marker lines
//! (`system:`, `user:`, `assistant:`, …). Splitting after templating is
//! what lets a `{% for %}` over a chat history produce one message per turn.
//!
//! Values interpolated with `{{ … }}` cannot introduce role markers: a line of
//! an input value that looks like a marker is rendered as text, so a user
//! typing `system:` into a question cannot forge a system message. Markers
//! come from the template text (`{{ turn.role }}:` works, since the colon is
//! template text).
//!
//! An input declared with kind `thread` (Prompty v2) is a conversation: its
//! value, a list of `{role, content}` turns, becomes messages of their own
//! roles where the template places it (`{{conversation}}`), never text that
//! role markers could cut (see `thread.rs`).
//!
//! Loading never resolves `${env:…}` references to keys and endpoints (keys
//! stay by reference in memory and in errors); callers resolve them with
//! [`resolve_env_refs`] when they build a client.

mod messages;
#[cfg(test)]
mod tests;
mod thread;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::config::prompt_file::describe_template_error;
use crate::llm::{ChatMessage, Role};

/// The file model lives in `config`; these paths stay for callers that name
/// them from here.
pub use crate::config::prompt_file::{PromptyTemplate, PromptyTool, TemplateEngine};
pub use crate::config::{
    PromptFile, PromptFileError, PromptyConfiguration, PromptyInput, PromptyModel, PromptyParameters,
    resolve_env_refs,
};

/// The name the body is registered under in its private environment.
const BODY_TEMPLATE: &str = "body";

/// Errors of loading or rendering a Prompty file. Each names the file and,
/// where there is one, the field, and says what would have been valid.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Reading or checking the file failed (front matter, template syntax).
    #[error(transparent)]
    File(#[from] PromptFileError),
    /// Rendering failed (a bad input value, a template runtime error).
    #[error("{}: rendering failed: {message}", path.display())]
    Render {
        /// The file, for the message.
        path: PathBuf,
        /// The template engine's message, with its line in the whole file.
        message: String,
    },
}

/// A Prompty file with its body compiled, ready to render. Derefs to its
/// [`PromptFile`], so the front matter reads as `prompty.model`,
/// `prompty.inputs`, `prompty.path`.
#[derive(Debug, Clone)]
pub struct Prompty {
    /// The file as configuration read it.
    file: Arc<PromptFile>,
    /// The compiled body; shared so clones and renders never re-parse it.
    env: Arc<Environment<'static>>,
    /// The body cut at its role marker lines, each part compiled on its
    /// own (`None` when the body cannot be cut so: see [`compile_parts`]).
    parts: Option<Arc<[Part]>>,
    /// The declared inputs' defaults as one template map, built once.
    defaults: Option<minijinja::Value>,
    /// Names of the inputs of kind `thread`, expanded into messages; empty
    /// for most prompts, which then render with no extra work.
    threads: Arc<[String]>,
}

impl Deref for Prompty {
    type Target = PromptFile;

    fn deref(&self) -> &PromptFile {
        &self.file
    }
}

/// One message-sized part of a body: the template text after a role marker
/// line, up to the next one.
#[derive(Debug)]
struct Part {
    role: Role,
    /// Its template's name in the environment.
    template: String,
    /// The variables it reads.
    reads: BTreeSet<String>,
    /// Body lines before it, for error lines.
    line_offset: usize,
    /// The part as text and bare `{{ name }}`s, when that is all it is
    /// (most per-request parts: `{{ query }}`), rendered without a
    /// template run when every name holds a string.
    plain: Option<Vec<Piece>>,
}

/// A piece of a plain part.
#[derive(Debug)]
enum Piece {
    Text(String),
    Name(String),
}

/// `source` as text and bare `{{ name }}`s, rendered the way minijinja
/// renders it (one trailing newline dropped), or `None` when it holds
/// anything else: a block, a comment, whitespace control, a filter, an
/// attribute, an expression.
fn plain_pieces(source: &str) -> Option<Vec<Piece>> {
    if source.contains("{%") || source.contains("{#") {
        return None;
    }
    // As minijinja's lexer drops them, each on its own.
    let source = source.strip_suffix('\n').unwrap_or(source);
    let source = source.strip_suffix('\r').unwrap_or(source);
    let mut pieces = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        let (text, after) = (&rest[..start], &rest[start + 2..]);
        let end = after.find("}}")?;
        let name = after[..end].trim();
        let ident = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // Literals (`{{ true }}`) are not names.
        let literal = ["true", "false", "none", "True", "False", "None"].contains(&name);
        if !ident || literal {
            return None;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        pieces.push(Piece::Name(name.to_string()));
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return None;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Some(pieces)
}

/// A plain part rendered with `context`, or `None` when a name holds
/// anything but a string (a number, a list, nothing): minijinja renders
/// those.
fn render_plain(pieces: &[Piece], context: &minijinja::Value) -> Option<String> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Name(name) => {
                let value = context.get_attr(name).ok()?;
                messages::push_guarded(&mut out, value.as_str()?);
            }
        }
    }
    Some(out)
}

/// A prompt prepared for one agent: parts that read only values fixed for
/// the agent (a router's intent list) are rendered once, here; the others
/// render per request. [`PreparedPrompt::render`] gives the same messages
/// as [`Prompty::render_value`] with the fixed values merged in.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    prompty: Arc<Prompty>,
    fixed: minijinja::Value,
    /// Per part (in order): its messages when rendered once, `None` when
    /// it renders per request. Empty when the body has no parts.
    done: Arc<[Option<Vec<ChatMessage>>]>,
}

impl PreparedPrompt {
    /// Renders the messages for one request's `inputs` (a map; it must not
    /// repeat the fixed values' names, which win).
    pub fn render(&self, inputs: minijinja::Value) -> Result<Vec<ChatMessage>, PromptError> {
        let context = minijinja::value::merge_maps([inputs, self.fixed.clone()]);
        self.prompty.render_parts(context, &self.done)
    }

    /// The names of the prompt's inputs of kind `thread` (where a
    /// conversation goes), in declaration order.
    pub fn thread_inputs(&self) -> &[String] {
        &self.prompty.threads
    }
}

impl Prompty {
    /// Reads, checks and compiles a Prompty file.
    pub fn load(path: &Path) -> Result<Prompty, PromptError> {
        Prompty::compile(Arc::new(PromptFile::load(path)?))
    }

    /// Parses, checks and compiles Prompty text. `path` names the file in
    /// errors and anchors `${file:…}` references.
    pub fn parse(text: &str, path: &Path) -> Result<Prompty, PromptError> {
        Prompty::compile(Arc::new(PromptFile::parse(text, path)?))
    }

    /// Compiles a file's body for rendering.
    pub fn compile(file: Arc<PromptFile>) -> Result<Prompty, PromptError> {
        let source = file.template_source();
        let mut env = compile(&source, &file.path, file.body_line_offset)?;
        let parts = compile_parts(&mut env, &source).map(Arc::from);
        let defaults: BTreeMap<&str, minijinja::Value> = file
            .inputs
            .iter()
            .filter_map(|(name, i)| {
                i.default.as_ref().map(|d| (name.as_str(), minijinja::Value::from_serialize(d)))
            })
            .collect();
        let defaults = (!defaults.is_empty()).then(|| minijinja::Value::from(defaults));
        let threads = file
            .inputs
            .iter()
            .filter(|(_, input)| input.kind.as_deref() == Some(thread::KIND))
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Prompty { file, env: Arc::new(env), parts, defaults, threads })
    }

    /// The file this prompt was compiled from.
    pub fn file(&self) -> &Arc<PromptFile> {
        &self.file
    }

    /// Prepares this prompt for an agent whose `fixed` values (a map) are
    /// the same on every request: the parts that read nothing else are
    /// rendered now, once.
    pub fn prepare(self: &Arc<Self>, fixed: minijinja::Value) -> Result<PreparedPrompt, PromptError> {
        let names: BTreeSet<String> = match fixed.try_iter() {
            Ok(keys) => keys.filter_map(|k| k.as_str().map(str::to_string)).collect(),
            Err(_) => BTreeSet::new(),
        };
        let mut done = Vec::new();
        for part in self.parts.iter().flat_map(|p| p.iter()) {
            if part.reads.is_subset(&names) {
                let context = self.with_defaults(fixed.clone());
                done.push(Some(self.render_part(part, context)?));
            } else {
                done.push(None);
            }
        }
        Ok(PreparedPrompt { prompty: self.clone(), fixed, done: done.into() })
    }

    /// Renders the body with `inputs` (a JSON object, or `null` for none)
    /// merged over the declared input defaults, then splits the text into
    /// messages at role marker lines.
    pub fn render(&self, inputs: &serde_json::Value) -> Result<Vec<ChatMessage>, PromptError> {
        match inputs {
            serde_json::Value::Object(_) => self.render_value(minijinja::Value::from_serialize(inputs)),
            serde_json::Value::Null => self.render_value(minijinja::context! {}),
            other => Err(PromptError::Render {
                path: self.path.clone(),
                message: format!("inputs must be a JSON object of name → value, got {}", json_kind(other)),
            }),
        }
    }

    /// [`Prompty::render`] for inputs that are already a template value (a
    /// map), as the agents build them: values prepared once (an agent's
    /// intent list) are shared, not copied, on every render.
    pub fn render_value(&self, inputs: minijinja::Value) -> Result<Vec<ChatMessage>, PromptError> {
        self.render_parts(inputs, &[])
    }

    /// Whether the body renders part by part (else whole, then split).
    #[cfg(test)]
    fn has_parts(&self) -> bool {
        self.parts.is_some()
    }

    /// The body rendered whole and then split, as when it has no parts.
    #[cfg(test)]
    fn render_whole(&self, inputs: minijinja::Value) -> Result<Vec<ChatMessage>, PromptError> {
        Prompty { parts: None, ..self.clone() }.render_value(inputs)
    }

    /// `inputs` over the declared defaults.
    fn with_defaults(&self, inputs: minijinja::Value) -> minijinja::Value {
        match &self.defaults {
            Some(d) => minijinja::value::merge_maps([d.clone(), inputs]),
            None => inputs,
        }
    }

    /// Renders the body part by part (whole, when it has no parts), taking
    /// the messages of part `i` from `done[i]` where they were rendered
    /// before.
    fn render_parts(
        &self,
        inputs: minijinja::Value,
        done: &[Option<Vec<ChatMessage>>],
    ) -> Result<Vec<ChatMessage>, PromptError> {
        if self.threads.is_empty() {
            return self.render_text_parts(inputs, done);
        }
        let (inputs, threads) = thread::substitute(&self.threads, inputs);
        let messages = self.render_text_parts(inputs, done)?;
        Ok(thread::expand(messages, &threads))
    }

    /// [`Prompty::render_parts`] before thread expansion.
    fn render_text_parts(
        &self,
        inputs: minijinja::Value,
        done: &[Option<Vec<ChatMessage>>],
    ) -> Result<Vec<ChatMessage>, PromptError> {
        let context = self.with_defaults(inputs);
        let Some(parts) = &self.parts else {
            let template = self.env.get_template(BODY_TEMPLATE).map_err(|e| self.render_error(&e))?;
            let text = template.render(context).map_err(|e| self.render_error(&e))?;
            return Ok(messages::split(&text));
        };
        let mut out = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            match done.get(i) {
                Some(Some(messages)) => out.extend(messages.iter().cloned()),
                _ => out.extend(self.render_part(part, context.clone())?),
            }
        }
        Ok(out)
    }

    fn render_part(&self, part: &Part, context: minijinja::Value) -> Result<Vec<ChatMessage>, PromptError> {
        let error = |e: minijinja::Error| PromptError::Render {
            path: self.path.clone(),
            message: describe_template_error(&e, self.body_line_offset + part.line_offset),
        };
        if let Some(text) = part.plain.as_deref().and_then(|pieces| render_plain(pieces, &context)) {
            return Ok(messages::split_from(&text, part.role));
        }
        let template = self.env.get_template(&part.template).map_err(error)?;
        let text = template.render(context).map_err(error)?;
        Ok(messages::split_from(&text, part.role))
    }

    /// Variables the template reads that `inputs` does not declare (loop
    /// variables and minijinja's globals such as `range` excluded). A
    /// non-empty set usually means a typo or a missing declaration.
    pub fn undeclared_variables(&self) -> BTreeSet<String> {
        let Ok(template) = self.env.get_template(BODY_TEMPLATE) else {
            return BTreeSet::new();
        };
        let globals: BTreeSet<&str> = self.env.globals().map(|(name, _)| name).collect();
        template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !self.inputs.contains_key(name) && !globals.contains(name.as_str()))
            .collect()
    }

    fn render_error(&self, err: &minijinja::Error) -> PromptError {
        PromptError::Render {
            path: self.path.clone(),
            message: describe_template_error(err, self.body_line_offset),
        }
    }
}

/// Compiles the body into its own environment, configured like Jinja2's
/// defaults plus lenient undefined values.
fn compile(body: &str, path: &Path, line_offset: usize) -> Result<Environment<'static>, PromptError> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(false);
    // Lenient: a missing input renders as empty text, as in Jinja2.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    // Prompts are not HTML; escaping would corrupt `<`, `&` and quotes.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(messages::format_value);
    // `{% extends %}`, `{% include %}` and `{% import %}` name files beside
    // the prompt (Prompty's `base:` prompts extend a sibling's body).
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    env.set_loader(move |name| load_sibling(&dir, name));
    env.add_template_owned(BODY_TEMPLATE, body.to_string()).map_err(|e| PromptFileError::Template {
        path: path.to_path_buf(),
        message: describe_template_error(&e, line_offset),
    })?;
    Ok(env)
}

/// The template a body names (`{% extends "base.prompty" %}`), read from
/// `dir`: a Prompty file's template (its front matter left out), any other
/// file as written. `None` (template not found) when there is no such file,
/// and for a name that leaves `dir` (absolute, or through `..`): a name can
/// come from a value (`{% include name %}`), and no input may read a file
/// elsewhere on the host into a prompt.
fn load_sibling(dir: &Path, name: &str) -> Result<Option<String>, minijinja::Error> {
    let inside = Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    let file = dir.join(name);
    if !inside || !file.is_file() {
        return Ok(None);
    }
    let failed = |message: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message);
    if file.extension().is_some_and(|e| e == "prompty") {
        let prompt = PromptFile::load(&file).map_err(|e| failed(e.to_string()))?;
        return Ok(Some(prompt.template_source().into_owned()));
    }
    std::fs::read_to_string(&file).map(Some).map_err(|e| failed(format!("{}: {e}", file.display())))
}

/// Cuts the body at its role marker lines and compiles each part as its own
/// template, so a render never re-scans the text for markers and a part
/// that reads only fixed values can be rendered once
/// ([`Prompty::prepare`]). `None` — render the body whole, then split —
/// when cutting would change what the body means: a marker inside a block
/// (`{% for %}` … `user:` … `{% endfor %}`, a comment, a raw block) leaves a
/// part that does not compile, and a part that reads a name another part
/// defines (`{% set %}`, a macro) reads a variable the whole body does not.
fn compile_parts(env: &mut Environment<'static>, body: &str) -> Option<Vec<Part>> {
    // A body that extends another is its blocks placed in that one: only
    // the whole of it has a meaning.
    if body
        .split("{%")
        .skip(1)
        .any(|tag| tag.trim_start_matches(['-', '+']).trim_start().starts_with("extends"))
    {
        return None;
    }
    let whole: BTreeSet<String> =
        env.get_template(BODY_TEMPLATE).ok()?.undeclared_variables(false).into_iter().collect();
    let globals: BTreeSet<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    let mut parts = Vec::new();
    for (i, (role, line_offset, source)) in messages::split_source(body).into_iter().enumerate() {
        if source.trim().is_empty() {
            continue;
        }
        // `{{-` at a part's start would eat the newline of the marker line
        // before it, and `-}}` at its end the newline before the next
        // marker: in the whole body those lines are no markers.
        if ["{{-", "{%-", "{#-"].iter().any(|tag| source.trim_start().starts_with(tag))
            || ["-}}", "-%}", "-#}"].iter().any(|tag| source.trim_end().ends_with(tag))
        {
            return None;
        }
        let template = format!("part{i}");
        let plain = plain_pieces(&source);
        env.add_template_owned(template.clone(), source).ok()?;
        let reads: BTreeSet<String> = env
            .get_template(&template)
            .ok()?
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !globals.contains(name))
            .collect();
        if !reads.is_subset(&whole) {
            return None;
        }
        parts.push(Part { role, template, reads, line_offset, plain });
    }
    Some(parts)
}

/// The JSON type of a value, for messages.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Compiling a [`PromptFile`] as configuration loaded it, for an agent that
/// holds the file (`config::AgentProfile::prompt`) and prepares its prompt
/// once when it starts.
pub trait PromptFileExt {
    /// Compiles the file's body ([`Prompty::compile`]).
    fn compile(&self) -> Result<Arc<Prompty>, PromptError>;

    /// Compiles the file's body and prepares it with the agent's `fixed`
    /// values ([`Prompty::prepare`]).
    fn prepare(&self, fixed: minijinja::Value) -> Result<PreparedPrompt, PromptError> {
        self.compile()?.prepare(fixed)
    }
}

impl PromptFileExt for Arc<PromptFile> {
    fn compile(&self) -> Result<Arc<Prompty>, PromptError> {
        Prompty::compile(self.clone()).map(Arc::new)
    }
}
