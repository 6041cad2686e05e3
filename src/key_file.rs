//! Files that hold a secret key (the node's Nostr key, its EVM key): the node reads one
//! only if no one but its owner can read or write it (no group or other permission bits),
//! so a key is never used from a file that has been readable by other users all along.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a key file may not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is readable by others (mode {mode:o}); chmod 600 it")]
    TooOpen { path: PathBuf, mode: u32 },
}

/// Checks that only the owner has access to `path` (mode 0600 or stricter).
pub fn check_private(path: &Path) -> Result<(), KeyFileError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads the key file `path` after [`check_private`].
pub fn read_private(path: &Path) -> Result<String, KeyFileError> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}
