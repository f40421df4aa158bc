//! `cli:` settings: how the command line (`alerts`, `ack`, `silence`, ...) reaches the API.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// `cli:` settings: how the command line reaches the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliConfig {
    /// The API's base URL, e.g. `https://prismwatch.example:9464`; default: `http.listen` of
    /// this config (`https` when `http.tls` is set).
    pub api_url: Option<String>,
    /// The API key or token the commands send (`{env: NAME}` or `{file: path}`).
    pub token: Option<Secret>,
    /// A CA certificate (PEM) to trust for the API's TLS certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
}
