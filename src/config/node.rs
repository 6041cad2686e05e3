//! `node`: who this node is: its id, its one identity (the Nostr key every part uses) and
//! its one public endpoint (announced, and the endpoint peers' tokens are bound to).

use serde::Deserialize;

use super::check::{Key, Problems};
use super::ConfigError;

/// The environment variable holding the node's Nostr secret key; it wins over
/// `node.key_file` (a key is better kept out of files that are copied around).
pub const NODE_KEY_ENV: &str = "BTP_NIPS_NODE_NSEC";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The `<nodeId>` of this node's ILP address.
    pub id: String,
    /// The file holding the node's Nostr secret key (nsec1… or 64 hex, mode 0600), unless
    /// [`NODE_KEY_ENV`] is set. Sessions, discovery and the event flow all use this key.
    pub key_file: String,
    /// The endpoint peers dial (`wss://…`): announced on Nostr and bound into the auth
    /// tokens this node accepts. Empty: not announced, and tokens are bound to the loopback
    /// forms of the address `session.listen` bound (a node for local use).
    pub public_endpoint: String,
}

impl NodeSettings {
    /// Checks the section; an error names its key. The public endpoint's scheme and host
    /// depend on other sections and are checked with them ([`super::Settings::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        let id = &self.id;
        p.add(
            Key("node.id").ensure(
                !id.is_empty()
                    && id.len() <= 32
                    && id
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && !id.starts_with(|c: char| c.is_ascii_digit()),
                format!(
                    "`{id}` must be 1-32 lowercase letters or digits, not starting with a digit"
                ),
            ),
        );
        p.add(Key("node.key_file").ensure(
            !self.key_file.trim().is_empty(),
            format!("must name the node's key file (default btp-nips-node.nsec; {NODE_KEY_ENV} wins over it)"),
        ));
        p.finish()
    }
}
