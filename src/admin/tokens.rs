//! The admin API's two bearer tokens: read from their files, or created there (mode 0600,
//! 32 random bytes as hex) on the first run.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The tokens a request may present, and what each allows.
#[derive(Clone)]
pub struct Tokens {
    /// May do everything.
    pub admin: String,
    /// May only read (GET, `/metrics`).
    pub read: String,
}

/// What a request's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Admin,
    ReadOnly,
}

impl Tokens {
    /// Reads both token files, creating the ones that do not exist.
    pub fn load_or_create(admin_file: &str, read_file: &str) -> std::io::Result<Tokens> {
        Ok(Tokens {
            admin: load_or_create(Path::new(admin_file))?,
            read: load_or_create(Path::new(read_file))?,
        })
    }

    /// What `given` allows, if it is one of the tokens (compared in constant time).
    pub fn access(&self, given: &str) -> Option<Access> {
        use crate::session::auth::secrets_match;
        // Both comparisons always run, so the timing says nothing about which matched.
        let admin = secrets_match(given, &self.admin);
        let read = secrets_match(given, &self.read);
        if admin {
            Some(Access::Admin)
        } else if read {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// The token in `path` (trimmed), or a new one written there with mode 0600.
pub fn load_or_create(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(std::io::Error::other(format!(
                    "admin token file {} is empty",
                    path.display()
                )));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            writeln!(file, "{token}")?;
            log::info!("wrote a new admin token to {} (mode 0600)", path.display());
            Ok(token)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )),
    }
}

/// Reads a token file without creating it (what the CLI does).
pub fn read(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// 32 bytes from the operating system's random source, as 64 hex characters.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_token_file_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_or_create(&path).unwrap(),
            first,
            "reused, not replaced"
        );
        let other = load_or_create(&dir.path().join("read-token")).unwrap();
        assert_ne!(other, first);
    }

    #[test]
    fn access_tells_the_two_tokens_apart() {
        let tokens = Tokens {
            admin: "a".repeat(64),
            read: "b".repeat(64),
        };
        assert_eq!(tokens.access(&"a".repeat(64)), Some(Access::Admin));
        assert_eq!(tokens.access(&"b".repeat(64)), Some(Access::ReadOnly));
        assert_eq!(tokens.access("a"), None);
        assert_eq!(tokens.access(""), None);
    }
}
