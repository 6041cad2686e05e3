//! `database`: where peer records are kept.

use serde::Deserialize;

use super::check::{Key, Problems};
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH`, a bare path, or `postgres://…`.
    pub url: String,
    pub pool_size: u32,
}

impl DatabaseSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        let url = &self.url;
        p.add(Key("database.url").ensure(!url.trim().is_empty(), "must not be empty"));
        p.add(Key("database.url").ensure(
            !url.contains("://")
                || url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"),
            format!(
                "`{url}` must start with sqlite://, postgres:// or postgresql://, or be a file path"
            ),
        ));
        p.add(Key("database.pool_size").between(self.pool_size, 1, 64));
        p.finish()
    }
}
