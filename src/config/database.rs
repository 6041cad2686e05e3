//! `database`: where peer records are kept.

use serde::Deserialize;

use super::check::Key;
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
        let url = &self.url;
        Key("database.url").ensure(!url.trim().is_empty(), "must not be empty")?;
        Key("database.url").ensure(
            !url.contains("://")
                || url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"),
            format!(
                "`{url}` must start with sqlite://, postgres:// or postgresql://, or be a file path"
            ),
        )?;
        Key("database.pool_size").between(self.pool_size, 1, 64)
    }
}
