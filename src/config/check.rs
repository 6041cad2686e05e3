//! The checker every section's `validate` uses. A rule is checked against one key (its
//! full dotted path, as an operator writes it in a file); a broken rule becomes
//! [`ConfigError::Invalid`] naming that key and the rule, so every message has one form.

use std::fmt::Display;

use super::ConfigError;

/// The rule of every count, size and duration that must not be zero.
const AT_LEAST_1: &str = "must be at least 1";

/// Every broken rule of one check, collected so they are all reported at once.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigError>);

impl Problems {
    /// Keeps `checked`'s error, if any (a [`ConfigError::Many`] is kept as its parts).
    pub fn add(&mut self, checked: Result<(), ConfigError>) {
        if let Err(e) = checked {
            match e {
                ConfigError::Many(all) => self.0.extend(all),
                one => self.0.push(one),
            }
        }
    }

    /// `Ok` if nothing broke, the one error, or all of them.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

/// One configuration key, about to be checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key(pub &'static str);

impl Key {
    /// The error for a value under this key that broke `rule`.
    pub fn invalid(self, rule: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.0,
            rule: rule.into(),
        }
    }

    /// `Ok` if `holds`, or the value under this key broke `rule`.
    pub fn ensure(self, holds: bool, rule: impl Into<String>) -> Result<(), ConfigError> {
        if holds {
            Ok(())
        } else {
            Err(self.invalid(rule))
        }
    }

    /// A check done elsewhere (an endpoint, an address) whose error is the broken rule.
    pub fn passes(self, checked: Result<(), String>) -> Result<(), ConfigError> {
        checked.map_err(|rule| self.invalid(rule))
    }

    /// A count or a duration that must not be zero (`Default` is zero for both).
    pub fn nonzero<T: Default + PartialEq>(self, value: T) -> Result<(), ConfigError> {
        self.ensure(value != T::default(), AT_LEAST_1)
    }

    /// A value within `low..=high`, both named in the rule.
    pub fn between<T: PartialOrd + Display>(
        self,
        value: T,
        low: T,
        high: T,
    ) -> Result<(), ConfigError> {
        let rule = format!("must be between {low} and {high}");
        self.ensure(low <= value && value <= high, rule)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_broken_rule_names_its_key_and_rule() {
        let err = Key("a.b").nonzero(Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration key `a.b` is invalid: must be at least 1"
        );
        assert!(Key("a.b").nonzero(Duration::from_millis(1)).is_ok());
        let err = Key("a.c").between(65u32, 1, 64).unwrap_err();
        assert_eq!(err.key(), Some("a.c"));
        assert!(
            err.to_string().ends_with("must be between 1 and 64"),
            "{err}"
        );
        assert!(Key("a.c").between(64u32, 1, 64).is_ok());
        let err = Key("a.d").passes(Err("no".into())).unwrap_err();
        assert!(err.to_string().ends_with("is invalid: no"), "{err}");
    }
}
