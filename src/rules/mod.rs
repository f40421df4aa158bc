//! Alert rules: loading and compiling YAML rule files, matching series, evaluating conditions,
//! and the per-(series, rule) lifecycle state machine. Pure and synchronous.

mod condition;
mod config;
pub mod prediction;
pub mod slo;
mod state;
mod template;

pub use condition::{Condition, Field, Op};
pub use config::{load_rules, Matcher, Rule, RuleDef, RuleFile, RuleSet, RulesConfig};
pub use state::{Phase, RuleState, Transition, TransitionKind};
pub use template::{fmt_duration_ms, fmt_value, Template, TemplateCtx};
