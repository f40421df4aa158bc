//! What the binary carries, so it runs from any folder: the shipped rules and routing file
//! (`config/rules/*.yaml`, `config/routing.yaml`). They stand in for the default paths when
//! those are found neither in the working folder nor beside the config file.

use std::path::Path;

/// The default `rules.paths` entry.
pub const RULES_PATH: &str = "config/rules";
/// The default `alerting.routing_file`.
pub const ROUTING_PATH: &str = "config/routing.yaml";

/// The shipped rule files: (name, text).
pub const RULE_FILES: &[(&str, &str)] = &[
    (
        "health.yaml",
        include_str!("../../config/rules/health.yaml"),
    ),
    (
        "marketprism.yaml",
        include_str!("../../config/rules/marketprism.yaml"),
    ),
    (
        "predictions.yaml",
        include_str!("../../config/rules/predictions.yaml"),
    ),
    ("slos.yaml", include_str!("../../config/rules/slos.yaml")),
];

/// The shipped routing file.
pub const ROUTING: &str = include_str!("../../config/routing.yaml");

/// How the built-in files are named in messages.
pub fn name(file: &str) -> String {
    format!("<built-in>/{file}")
}

/// Whether `configured` is the default `path` and `resolved` does not exist: the built-in
/// files stand in.
pub fn stands_in(configured: &Path, resolved: &Path, path: &str) -> bool {
    configured == Path::new(path) && !resolved.exists()
}
