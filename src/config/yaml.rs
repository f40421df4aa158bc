//! YAML into typed values, with errors that name the file and the key.

use serde_norway::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `source`: the reason is said once, in this message, not again as a cause.
    #[error("{file}: cannot read: {}", io_reason(reason))]
    Read {
        file: String,
        reason: std::io::Error,
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
    serde_path_to_error::deserialize(to_json(file, tree)?).map_err(|e| {
        ConfigError::invalid(
            file,
            e.path().to_string(),
            plain(&e.into_inner().to_string()),
        )
    })
}

/// A serde message in plain words: no Rust type names (`expected usize` is "expected a whole
/// number"), backquotes as quotes.
pub fn plain(message: &str) -> String {
    use std::sync::OnceLock;
    static TYPES: OnceLock<[(regex::Regex, &str); 6]> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        let re = |p: &str| regex::Regex::new(p).expect("valid regex");
        [
            (re(r"\b(?:u8|u16|u32|u64|usize|i8|i16|i32|i64|isize|an? (?:u|i)(?:8|16|32|64|size))\b"), "a whole number"),
            (re(r"\b(?:f32|f64)\b"), "a number"),
            (re(r"\ba sequence\b"), "a list"),
            (re(r"\b(?:a map|struct \w+)\b"), "a mapping"),
            (re(r"\ba string\b"), "text"),
            (re(r"\benum \w+\b"), "one of the names listed"),
        ]
    });
    let mut out = message.replace('`', "\"");
    out = out
        .replace("invalid type: string", "got the text")
        .replace("invalid type: integer", "got the number")
        .replace("invalid type: floating point", "got the number")
        .replace("invalid type: boolean", "got")
        .replace("invalid type: map", "got a mapping")
        .replace("invalid type: sequence", "got a list")
        .replace("invalid type: null", "got nothing")
        .replace("invalid value: integer", "got the number")
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("unknown variant", "unknown value");
    for (re, words) in types {
        out = re.replace_all(&out, *words).into_owned();
    }
    out
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

/// An I/O error in plain words (no "os error 2").
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "it does not exist".into(),
        PermissionDenied => "permission denied".into(),
        IsADirectory => "it is a folder, not a file".into(),
        NotADirectory => "a part of the path is a file, not a folder".into(),
        InvalidData => "it is not UTF-8 text".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
