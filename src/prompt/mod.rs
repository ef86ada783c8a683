//! Prompty files: YAML front matter and a role-marked, Jinja-templated body.
