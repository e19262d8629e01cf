//! Builders shared by the policy tests: scopes written as YAML, as in the
//! config file.

use super::{Policy, RawRule, ScopeRule};

/// Builds a policy from `(scope, YAML list of rules)` pairs, in order.
pub(super) fn policy(scopes: &[(&str, &str)]) -> Policy {
    let compiled = scopes
        .iter()
        .map(|(name, yaml)| {
            let raws: Vec<RawRule> =
                serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            let rules = raws
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    ScopeRule::compile(name, i, raw)
                        .unwrap_or_else(|e| panic!("{name}[{i}]: {e:?}"))
                })
                .collect();
            (name.to_string(), rules)
        })
        .collect();
    Policy::new(compiled)
}

/// A task's scope list.
pub(super) fn scopes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
