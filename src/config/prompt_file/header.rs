//! The data a Prompty file's front matter declares: model, parameters,
//! inputs. Plain values, kept as written (`${env:…}` references included).

use std::collections::BTreeMap;

use crate::config::settings::ModelParams;

/// The `model` section: which API, which endpoint, which sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptyModel {
    /// `chat` (the default) or `completion`.
    pub api: String,
    /// Where the model lives, for providers that read the file itself.
    pub configuration: PromptyConfiguration,
    /// Sampling parameters the prompt was written for.
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
    /// The YAML `type` (`string`, `array`, …), when declared.
    pub kind: Option<String>,
    /// What the input is, for documentation.
    pub description: Option<String>,
    /// Used when rendering if the caller does not give the input.
    pub default: Option<serde_json::Value>,
    /// An example value, for documentation and tests; never rendered.
    pub sample: Option<serde_json::Value>,
    /// Other keys of the declaration, kept as written.
    pub extra: BTreeMap<String, serde_json::Value>,
}
