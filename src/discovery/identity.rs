//! The node's Nostr identity: a secret key read from the environment variable
//! `BTP_NIPS_NODE_NSEC` or the file `node.key_file` (nsec bech32 or 64 hex characters), and
//! `keygen`, which writes a new one to a file only its owner can read (mode 0600) and never
//! overwrites an existing key. Every part of the node (sessions, discovery, event flow)
//! uses this one key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nostr_sdk::prelude::{Keys, ToBech32};

use crate::key_file::KeyFileError;

/// Why the node's key could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no node key: key file {path} does not exist (node.key_file) and the environment \
         variable {env_var} is not set; run `btp-nips-node init` (or `btp-nips-node keygen`) \
         to create one, or `btp-nips-node run --ephemeral` for a throwaway identity"
    )]
    Missing { path: PathBuf, env_var: String },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} does not hold a Nostr secret key (nsec1… or 64 hex characters): {reason}")]
    Malformed { origin: String, reason: String },
    #[error("key file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("key file {path} is readable by others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
}

/// Parses a secret key written as `nsec1…` or as 64 hex characters.
pub fn parse_secret(text: &str, origin: &str) -> Result<Keys, IdentityError> {
    let text = text.trim();
    let malformed = |reason: String| IdentityError::Malformed {
        origin: origin.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(malformed("it is empty".into()));
    }
    let looks_hex = text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit());
    if !text.starts_with("nsec1") && !looks_hex {
        return Err(malformed(format!(
            "expected nsec1… or 64 hex characters, found {} characters",
            text.len()
        )));
    }
    Keys::parse(text).map_err(|e| malformed(e.to_string()))
}

/// Where the node's key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env(var) => write!(f, "the environment variable {var}"),
            KeySource::File(path) => write!(f, "node.key_file {}", path.display()),
        }
    }
}

/// Loads the node key: the environment variable `env_var` if set, else `key_file`; a
/// missing file says how to create one.
pub fn load(env_var: &str, key_file: &Path) -> Result<(Keys, KeySource), IdentityError> {
    if let Ok(value) = std::env::var(env_var) {
        let keys = parse_secret(&value, &format!("environment variable {env_var}"))?;
        return Ok((keys, KeySource::Env(env_var.to_string())));
    }
    if !key_file.exists() {
        return Err(IdentityError::Missing {
            path: key_file.to_path_buf(),
            env_var: env_var.to_string(),
        });
    }
    Ok((
        load_file(key_file)?,
        KeySource::File(key_file.to_path_buf()),
    ))
}

/// The node's key as configured (`BTP_NIPS_NODE_NSEC`, else `node.key_file`).
pub fn load_node_key(
    settings: &crate::config::Settings,
) -> Result<(Keys, KeySource), IdentityError> {
    load(
        crate::config::NODE_KEY_ENV,
        Path::new(settings.node.key_file.trim()),
    )
}

/// Reads a key file; refuses one that others can read.
pub fn load_file(path: &Path) -> Result<Keys, IdentityError> {
    let text = crate::key_file::read_private(path).map_err(|e| match e {
        KeyFileError::Io { path, source } => IdentityError::Io { path, source },
        KeyFileError::TooOpen { path, mode } => IdentityError::TooOpen { path, mode },
    })?;
    parse_secret(&text, &format!("key file {}", path.display()))
}

/// Writes a new key to `path` (created with mode 0600, never overwriting); returns it.
pub fn keygen(path: &Path) -> Result<Keys, IdentityError> {
    let keys = Keys::generate();
    let nsec = keys
        .secret_key()
        .to_bech32()
        .expect("a secret key always encodes");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => IdentityError::Exists(path.to_path_buf()),
            _ => IdentityError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    writeln!(file, "{nsec}")
        .and_then(|_| file.sync_all())
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_file_that_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.nsec");
        let keys = keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_file(&path).unwrap().public_key(), keys.public_key());
        assert!(matches!(keygen(&path), Err(IdentityError::Exists(_))));
        assert_eq!(load_file(&path).unwrap().public_key(), keys.public_key());
    }

    #[test]
    fn hex_and_nsec_forms_give_the_same_key() {
        let keys = Keys::generate();
        let hex = keys.secret_key().to_secret_hex();
        let nsec = keys.secret_key().to_bech32().unwrap();
        assert_eq!(
            parse_secret(&hex, "t").unwrap().public_key(),
            keys.public_key()
        );
        assert_eq!(
            parse_secret(&nsec, "t").unwrap().public_key(),
            keys.public_key()
        );
    }

    #[test]
    fn bad_keys_are_refused_naming_where_they_came_from() {
        let err = parse_secret("npub1xyz", "environment variable K").unwrap_err();
        assert!(err.to_string().contains("environment variable K"), "{err}");
        let err = parse_secret(&"0".repeat(64), "key file f").unwrap_err();
        assert!(err.to_string().contains("key file f"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.nsec");
        std::fs::write(&path, Keys::generate().secret_key().to_secret_hex()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_file(&path),
            Err(IdentityError::TooOpen { .. })
        ));
    }
}
