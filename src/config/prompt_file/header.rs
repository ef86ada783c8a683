//! The data a Prompty file's front matter declares: model, parameters,
//! inputs, template, tools. Plain values, kept as written (`${env:…}`
//! references to keys and endpoints included). Prompty v1 and v2 spell
//! several of these differently; both read into the same types.

use std::collections::BTreeMap;

use crate::config::settings::ModelParams;

/// The `model` section: which API, which endpoint, which sampling parameters.
/// Which endpoint meshops calls is the agent's model profile's choice: `id`,
/// `provider`, `connection` and `configuration` are kept for descriptions
/// and never switch endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptyModel {
    /// v1 `api` or v2 `apiType`, lowercase: `chat` (the default, and the
    /// only one meshops calls), `completion`, `embedding`, `image`,
    /// `responses`.
    pub api: String,
    /// v2 `id` (or `model: <id>` written as a string): the model the prompt
    /// was written for.
    pub id: Option<String>,
    /// v2 `provider` (`openai`, `azure`, `anthropic`, …), lowercase.
    pub provider: Option<String>,
    /// v2 `connection`, as written (`${env:…}` references kept): the file's
    /// idea of an endpoint, shown and never used.
    pub connection: Option<serde_json::Value>,
    /// Where the model lives, for providers that read the file itself.
    pub configuration: PromptyConfiguration,
    /// Sampling parameters the prompt was written for: v1 `parameters` or
    /// v2 `options` (`maxOutputTokens` read as `max_tokens`, …).
    pub parameters: PromptyParameters,
    /// `first` or `all` (how many choices to return), when given.
    pub response: Option<String>,
    /// Other keys of `model`, kept as written.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for PromptyModel {
    fn default() -> Self {
        PromptyModel {
            api: "chat".to_string(),
            id: None,
            provider: None,
            connection: None,
            configuration: PromptyConfiguration::default(),
            parameters: PromptyParameters::default(),
            response: None,
            extra: BTreeMap::new(),
        }
    }
}

/// `model.configuration`: where the model lives. Values are kept exactly as
/// written, `${env:…}` references included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptyConfiguration {
    /// The YAML `type`: `azure_openai`, `openai`, `serverless`, …
    pub kind: Option<String>,
    /// Azure OpenAI resource endpoint.
    pub azure_endpoint: Option<String>,
    /// Azure OpenAI deployment name.
    pub azure_deployment: Option<String>,
    /// Azure OpenAI API version.
    pub api_version: Option<String>,
    /// The key, by `${env:…}` reference (a key written out is kept as
    /// written, never logged).
    pub api_key: Option<String>,
    /// The model name (`openai` and `serverless` configurations).
    pub name: Option<String>,
    /// The YAML `base_url`, or its synonym `endpoint`.
    pub base_url: Option<String>,
    /// OpenAI organization id.
    pub organization: Option<String>,
    /// Keys this module does not interpret, kept for providers that do.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `model.parameters`: sampling parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptyParameters {
    /// Sampling temperature (0 to 2).
    pub temperature: Option<f64>,
    /// Longest answer, in tokens.
    pub max_tokens: Option<u32>,
    /// Nucleus sampling share (0 to 1).
    pub top_p: Option<f64>,
    /// Seed, for providers that can repeat an answer.
    pub seed: Option<i64>,
    /// `stop` may be written as one string or a list; kept as a list.
    pub stop: Vec<String>,
    /// `text` or `json_object`, written as a string or `{type: …}`.
    pub response_format: Option<String>,
    /// Parameters this module does not interpret (`frequency_penalty`, …).
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl PromptyParameters {
    /// The parameters [`ModelParams`] knows; `extra` has no place there and
    /// is left for providers that read the Prompty file themselves.
    pub fn to_model_params(&self) -> ModelParams {
        ModelParams {
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
            response_format: self.response_format.clone(),
        }
    }
}

/// One declared input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptyInput {
    /// v1 `type` or v2 `kind` (`string`, `array`, `thread`, …), when
    /// declared or inferred from a shorthand default.
    pub kind: Option<String>,
    /// What the input is, for documentation.
    pub description: Option<String>,
    /// Used when rendering if the caller does not give the input.
    pub default: Option<serde_json::Value>,
    /// v1 `sample` or v2 `example`: an example value, for documentation and
    /// tests; never rendered.
    pub sample: Option<serde_json::Value>,
    /// v2 `required`: documentation for callers (rendering stays lenient,
    /// so a missing input renders empty as before).
    pub required: bool,
    /// v2 `enumValues` (or `enum`): the allowed values, for documentation.
    pub enum_values: Vec<serde_json::Value>,
    /// Other keys of the declaration, kept as written.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `template`: which engine renders the body and which parser cuts it into
/// messages.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptyTemplate {
    /// The format kind as written, lowercase (`jinja2` when absent).
    pub format: String,
    /// The parser kind as written, lowercase (`prompty` when absent).
    pub parser: String,
    /// How meshops renders the body, decided at load from `format` and the
    /// body itself.
    pub engine: TemplateEngine,
}

impl Default for PromptyTemplate {
    fn default() -> Self {
        PromptyTemplate {
            format: "jinja2".to_string(),
            parser: "prompty".to_string(),
            engine: TemplateEngine::Jinja2,
        }
    }
}

/// How a body is rendered. Only Jinja2 is supported; a body in another
/// format is rendered by Jinja2 where its syntax means the same there, and
/// sent as written otherwise (reported at `meshops validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateEngine {
    /// Jinja2, the body as written.
    Jinja2,
    /// A Mustache body of variables, comments and (inverted) sections,
    /// rewritten to the equivalent Jinja2 (partials and delimiter changes
    /// are `Verbatim`).
    MustacheAsJinja,
    /// The body sent as written, without substitution (role markers still
    /// cut it into messages).
    Verbatim,
}

/// One entry of `tools` (v2), or of v1's `model.parameters.tools` in
/// OpenAI's wire form. Kept as plain data: the kinds meshops can bind
/// (`function`, `mcp`) are there for the agent that runs the prompt; other
/// kinds are reported at `meshops validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptyTool {
    /// The tool's name, unique within the prompt.
    pub name: String,
    /// `function`, `mcp`, `openapi`, `prompty`, or a custom kind as written.
    pub kind: String,
    /// What the tool does, for the model.
    pub description: String,
    /// The arguments as a JSON Schema object (v2 property lists converted,
    /// v1 wire schemas as written); `None` when the tool declares none.
    pub parameters: Option<serde_json::Value>,
    /// `strict`: the model must follow `parameters` exactly.
    pub strict: bool,
    /// `bindings`: arguments filled from the prompt's inputs (or fixed
    /// values), never shown to the model.
    pub bindings: BTreeMap<String, serde_json::Value>,
    /// `connection` (mcp, openapi and custom kinds), as written.
    pub connection: Option<serde_json::Value>,
    /// Other keys (`serverName`, `specification`, `path`, `mode`, …), as
    /// written.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl PromptyTool {
    /// `parameters` without the bound arguments: what a model is shown.
    pub fn parameters_for_model(&self) -> Option<serde_json::Value> {
        let mut schema = self.parameters.clone()?;
        if let Some(props) = schema.get_mut("properties").and_then(serde_json::Value::as_object_mut) {
            props.retain(|name, _| !self.bindings.contains_key(name));
        }
        if let Some(required) = schema.get_mut("required").and_then(serde_json::Value::as_array_mut) {
            required.retain(|name| name.as_str().is_none_or(|n| !self.bindings.contains_key(n)));
        }
        Some(schema)
    }
}
