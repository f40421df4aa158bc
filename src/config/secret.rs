//! Secrets in configuration: only where they are (an environment variable or a file), never
//! the secret itself.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a secret is: an environment variable or a file (its content, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// The secret's value, or why it is not there.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Env(name) => std::env::var(name)
                .map(|v| v.trim().to_string())
                .map_err(|_| format!("environment variable {name} is not set")),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|v| v.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}
