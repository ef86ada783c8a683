//! The `model` section, v1 and v2: `model: <id>`, or a mapping with v1's
//! `api`/`configuration`/`parameters` and v2's
//! `id`/`provider`/`apiType`/`connection`/`options`. Both parameter
//! spellings read into [`PromptyParameters`] (v2 `maxOutputTokens` is
//! `max_tokens`, `topP` is `top_p`, `stopSequences` is `stop`), so a
//! prompt's sampling parameters reach the agent's model profile the same
//! way. Which endpoint is called stays the profile's choice.

use std::borrow::Cow;

use serde_yaml_ng::Value;

use super::error::PromptFileError;
use super::front_matter::Cx;
use super::header::{PromptyConfiguration, PromptyModel, PromptyParameters};

/// Providers (v2 `provider`, v1 `configuration.type`) meshops has a client
/// for: OpenAI's API and Azure OpenAI (any OpenAI-compatible server is
/// reached through a model profile's `base_url`).
const PROVIDERS: [&str; 4] = ["openai", "azure", "azure_openai", "azureopenai"];

impl Cx<'_> {
    pub(crate) fn model(&mut self, value: &Value) -> Result<PromptyModel, PromptFileError> {
        let mut model = PromptyModel::default();
        let map = match value {
            // v2 shorthand: `model: gpt-4o` is `model: {id: gpt-4o}`.
            Value::String(id) => {
                model.id = Some(id.trim().to_string());
                return Ok(model);
            }
            Value::Mapping(map) => map,
            other => return Err(self.expected("model", "a model id or a mapping", other)),
        };
        for (key, value) in map {
            let key = self.key(key, "model")?;
            if value.is_null() {
                continue;
            }
            let field = format!("model.{key}");
            match key {
                "api" | "apiType" => model.api = self.string(value, &field)?.trim().to_ascii_lowercase(),
                "id" => model.id = Some(self.scalar_string(value, &field)?),
                "provider" => model.provider = Some(self.string(value, &field)?.trim().to_ascii_lowercase()),
                "connection" => model.connection = Some(self.json(value, &field)?),
                "configuration" => model.configuration = self.configuration(value)?,
                "parameters" | "options" => self.parameters(value, &field, &mut model.parameters)?,
                "response" => model.response = Some(self.one_of(value, &field, &["first", "all"])?),
                _ => {
                    model.extra.insert(key.to_string(), self.json(value, &field)?);
                }
            }
        }
        if model.api != "chat" {
            self.unsupported(format!("model API `{}` (called as chat)", model.api));
        }
        if let Some(provider) = &model.provider {
            self.provider(provider, "model.provider");
        }
        if let Some(kind) = &model.configuration.kind {
            self.provider(&kind.to_ascii_lowercase(), "model.configuration.type");
        }
        // A v1-era `connection` names its provider by `type`.
        if let Some(kind) = model.connection.as_ref().and_then(|c| c.get("type")).and_then(|t| t.as_str()) {
            self.provider(&kind.to_ascii_lowercase(), "model.connection.type");
        }
        Ok(model)
    }

    /// Reports a provider meshops has no client for.
    fn provider(&mut self, provider: &str, field: &str) {
        if !PROVIDERS.contains(&provider) {
            self.unsupported(format!("{field} `{provider}` (the agent's model profile is called)"));
        }
    }

    fn configuration(&self, value: &Value) -> Result<PromptyConfiguration, PromptFileError> {
        let mut config = PromptyConfiguration::default();
        for (key, value) in self.mapping(value, "model.configuration")? {
            let key = self.key(key, "model.configuration")?;
            if value.is_null() {
                continue;
            }
            let field = format!("model.configuration.{key}");
            let slot = match key {
                "type" => &mut config.kind,
                "azure_endpoint" => &mut config.azure_endpoint,
                "azure_deployment" => &mut config.azure_deployment,
                "api_version" => &mut config.api_version,
                "api_key" => &mut config.api_key,
                "name" => &mut config.name,
                "organization" => &mut config.organization,
                "base_url" | "endpoint" => {
                    let url = self.string(value, &field)?;
                    // Both spellings given with different values is ambiguous.
                    if config.base_url.as_ref().is_some_and(|old| *old != url) {
                        return Err(self
                            .error(&field, "`base_url` and `endpoint` are the same setting; give only one"));
                    }
                    config.base_url = Some(url);
                    continue;
                }
                _ => {
                    config.extra.insert(key.to_string(), self.json(value, &field)?);
                    continue;
                }
            };
            *slot = Some(self.scalar_string(value, &field)?);
        }
        Ok(config)
    }

    /// v1 `model.parameters` or v2 `model.options` (`section` names which),
    /// read into `params`. Parameters meshops has no place for are kept in
    /// `params.extra` and reported.
    fn parameters(
        &mut self,
        value: &Value,
        section: &str,
        params: &mut PromptyParameters,
    ) -> Result<(), PromptFileError> {
        for (key, value) in self.mapping(value, section)? {
            let key = self.key(key, section)?;
            // A Python `None` written into YAML reads as the text `None`.
            if value.is_null() || value.as_str().is_some_and(|t| matches!(t.trim(), "None" | "none" | "null"))
            {
                continue;
            }
            let field = format!("{section}.{key}");
            let value = if NUMERIC.contains(&key) { number_from_text(value) } else { Cow::Borrowed(value) };
            let value = value.as_ref();
            match key {
                "temperature" => params.temperature = Some(self.number(value, &field, 0.0, 2.0)?),
                "top_p" | "topP" => params.top_p = Some(self.number(value, &field, 0.0, 1.0)?),
                "max_tokens" | "maxOutputTokens" | "max_completion_tokens" | "maxTokens" => {
                    let tokens =
                        value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0).ok_or_else(
                            || self.expected(&field, "a whole number from 1 to 4294967295", value),
                        )?;
                    params.max_tokens = Some(tokens);
                }
                "seed" => {
                    let seed =
                        value.as_i64().ok_or_else(|| self.expected(&field, "a whole number", value))?;
                    params.seed = Some(seed);
                }
                "stop" | "stopSequences" => {
                    params.stop = match value {
                        Value::String(one) => vec![one.clone()],
                        Value::Sequence(_) => self.string_list(value, &field)?,
                        other => {
                            return Err(self.expected(&field, "a string or a list of strings", other));
                        }
                    };
                }
                "response_format" | "responseFormat" => self.response_format(value, &field, params)?,
                // Tools under the parameters: v1's place for them.
                "tools" => {
                    let tools = self.tools(value, &field)?;
                    self.tools.extend(tools);
                }
                // v2: provider-specific options, passed through by runtimes
                // that have such a provider.
                "additionalProperties" => {
                    for (key, value) in self.mapping(value, &field)? {
                        let key = self.key(key, &field)?;
                        params.extra.insert(key.to_string(), self.json(value, &format!("{field}.{key}"))?);
                        self.unsupported(format!("`{field}.{key}`"));
                    }
                }
                _ => {
                    params.extra.insert(key.to_string(), self.json(value, &field)?);
                    self.unsupported(format!("`{field}`"));
                }
            }
        }
        Ok(())
    }

    /// `response_format`: `text` or `json_object` (written as a string or
    /// `{type: …}`), or `{type: json_schema, json_schema: {schema}}`, whose
    /// schema becomes the prompt's output schema (as v2 `outputs` would).
    fn response_format(
        &mut self,
        value: &Value,
        field: &str,
        params: &mut PromptyParameters,
    ) -> Result<(), PromptFileError> {
        const FORMATS: [&str; 3] = ["text", "json_object", "json_schema"];
        let format = match value {
            Value::Mapping(map) => {
                let kind =
                    map.get("type").ok_or_else(|| self.error(field, "a mapping needs a `type` key"))?;
                self.one_of(kind, &format!("{field}.type"), &FORMATS)?
            }
            other => self.one_of(other, field, &FORMATS)?,
        };
        if format != "json_schema" {
            params.response_format = Some(format);
            return Ok(());
        }
        match value.get("json_schema").and_then(|s| s.get("schema")) {
            Some(schema) => {
                self.response_schema = Some(self.json(schema, &format!("{field}.json_schema.schema"))?)
            }
            None => self.unsupported(format!("`{field}` json_schema without a `json_schema.schema`")),
        }
        Ok(())
    }
}

/// The parameters read as numbers: a number written as text is one there.
const NUMERIC: [&str; 8] = [
    "temperature",
    "top_p",
    "topP",
    "max_tokens",
    "maxOutputTokens",
    "max_completion_tokens",
    "maxTokens",
    "seed",
];

/// A number written as text (`max_tokens: "800"`, quoted by a generator) as
/// the number; anything else as it is.
fn number_from_text(value: &Value) -> Cow<'_, Value> {
    match value {
        Value::String(text) => match serde_yaml_ng::from_str::<Value>(text.trim()) {
            Ok(number @ Value::Number(_)) => Cow::Owned(number),
            _ => Cow::Borrowed(value),
        },
        other => Cow::Borrowed(other),
    }
}
