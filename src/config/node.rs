//! `node`: who this node is.

use serde::Deserialize;

use super::check::Key;
use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The `<nodeId>` of this node's ILP address.
    pub id: String,
}

impl NodeSettings {
    /// Checks the section; an error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.id;
        Key("node.id").ensure(
            !id.is_empty()
                && id.len() <= 32
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !id.starts_with(|c: char| c.is_ascii_digit()),
            format!("`{id}` must be 1-32 lowercase letters or digits, not starting with a digit"),
        )
    }
}
