//! [`PromptFileError`]: what can be wrong with a prompt file as it is read.

use std::path::PathBuf;

use crate::config::EnvRefError;

/// Errors of reading a Prompty file: its front matter and the syntax of its
/// template. Each names the file and, where there is one, the field, and
/// says what would have been valid. (Rendering errors belong to the `prompt`
/// layer, which wraps these.)
#[derive(Debug, thiserror::Error)]
pub enum PromptFileError {
    /// The file could not be read.
    #[error("cannot read prompt file {}: {source}", path.display())]
    Io {
        /// The file, for the message.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The front matter is missing, unterminated, or not a YAML mapping.
    #[error("{}: front matter: {message}", path.display())]
    FrontMatter {
        /// The file, for the message.
        path: PathBuf,
        /// What is wrong, with its file line where YAML gives one.
        message: String,
    },
    /// A front matter field holds something invalid.
    #[error("{}: field `{field}`: {message}", path.display())]
    Field {
        /// The file, for the message.
        path: PathBuf,
        /// The dotted field (`model.parameters.temperature`).
        field: String,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// A `${env:NAME}` reference the loader resolves (outside the model's
    /// connection and the tools) names a variable that is not set and has
    /// no default.
    #[error("{}: field `{field}`: {source}", path.display())]
    EnvRef {
        /// The file, for the message.
        path: PathBuf,
        /// The dotted field holding the reference.
        field: String,
        /// Which variable is missing.
        #[source]
        source: EnvRefError,
    },
    /// A `${file:…}` reference names a file that cannot be read.
    #[error("{}: field `{field}`: cannot read {}: {source}", path.display(), file.display())]
    FileRef {
        /// The prompt file, for the message.
        path: PathBuf,
        /// The dotted field holding the reference.
        field: String,
        /// The referenced file, resolved against the prompt file's folder.
        file: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The body is not a valid Jinja template.
    #[error("{}: template: {message}", path.display())]
    Template {
        /// The file, for the message.
        path: PathBuf,
        /// The template engine's message, with its line in the whole file.
        message: String,
    },
}
