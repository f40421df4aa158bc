//! YAML into typed values, with errors that name the file and the key.

use serde_norway::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: invalid YAML: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub fn invalid(
        file: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Parses YAML text, naming `file` in errors.
pub fn parse_yaml(file: &str, text: &str) -> Result<Value, ConfigError> {
    serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// Deserialises a typed value from a YAML tree, naming `file` and the key path on error.
pub fn from_tree<T: serde::de::DeserializeOwned>(
    file: &str,
    tree: Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(to_json(file, tree)?)
        .map_err(|e| ConfigError::invalid(file, e.path().to_string(), e.into_inner().to_string()))
}

/// YAML trees are typed through JSON values: serde_norway's `Value` only takes enums as YAML
/// tags, while the config uses the plain `- dedup: {...}` map form.
pub(super) fn to_json(file: &str, tree: Value) -> Result<serde_json::Value, ConfigError> {
    serde_json::to_value(tree).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// A config section's problems, as (key, message) pairs.
#[derive(Debug, Default)]
pub struct Problems(Vec<(String, String)>);

impl Problems {
    /// Records `message` for `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: &str) {
        if !ok {
            self.0.push((key.to_string(), message.to_string()));
        }
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}
