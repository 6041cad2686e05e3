//! The process's logger with a filter that can be changed while it runs
//! (`POST /v1/log-level`, the CLI's `log-level`): an `env_logger` logger behind a lock,
//! replaced whole when the filter changes. The binary installs it; a program that embeds
//! the node (the tests) may install it too, or keep its own logger, in which case the
//! filter cannot be changed over the API.

use std::sync::{OnceLock, RwLock};

use log::{Log, Metadata, Record};

/// The filter when `RUST_LOG` is not set: the node's own INFO lines (one per state change)
/// without its dependencies' chatter (alloy logs every RPC request at INFO; hyper, reqwest,
/// rustls and the websocket crates log connection details).
pub const DEFAULT_FILTER: &str =
    "info,alloy=warn,alloy_rpc_client=warn,alloy_transport_http=warn,hyper=warn,hyper_util=warn,\
     reqwest=warn,rustls=warn,tungstenite=warn,tokio_tungstenite=warn,actix_server=warn,\
     nostr_relay_pool=warn,nostr_sdk=warn";

/// The longest filter accepted (a filter is a short list of `module=level`).
const MAX_FILTER: usize = 1024;

struct Swappable {
    current: RwLock<(String, env_logger::Logger)>,
}

impl Log for Swappable {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.current
            .read()
            .map(|c| c.1.enabled(metadata))
            .unwrap_or(false)
    }

    fn log(&self, record: &Record<'_>) {
        if let Ok(c) = self.current.read() {
            if c.1.matches(record) {
                c.1.log(record);
            }
        }
    }

    fn flush(&self) {
        if let Ok(c) = self.current.read() {
            c.1.flush();
        }
    }
}

static LOGGER: OnceLock<&'static Swappable> = OnceLock::new();

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("log filter `{filter}` is not valid: {reason} (write it as RUST_LOG is written, such as `info,btp_nips_node=debug`)")]
    Invalid { filter: String, reason: String },
    #[error("this process's logger cannot be changed: the node runs inside a program that installed its own")]
    NotInstalled,
}

/// Checks `filter` with env_logger's parser, which otherwise skips what it cannot read;
/// each directive must also be a level or `module=level` with a Rust path for a module (so
/// `verbose` is refused rather than read as a module of that name).
pub fn check_filter(filter: &str) -> Result<(), FilterError> {
    let invalid = |reason: String| FilterError::Invalid {
        filter: filter.chars().take(MAX_FILTER).collect(),
        reason,
    };
    if filter.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if filter.len() > MAX_FILTER {
        return Err(invalid(format!(
            "it is {} bytes; at most {MAX_FILTER}",
            filter.len()
        )));
    }
    env_filter::Builder::new()
        .try_parse(filter)
        .map_err(|e| invalid(e.to_string()))?;
    let directives = filter.split('/').next().unwrap_or("");
    for directive in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        // A bare word is a level; env_logger would also read it as a module with every
        // level on, which silently turns the rest of the log off.
        let module = match directive.split_once('=') {
            Some((module, _)) => module.trim(),
            None if directive.parse::<log::LevelFilter>().is_ok() => continue,
            None => "",
        };
        let rust_path = !module.is_empty()
            && module
                .split("::")
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !rust_path {
            return Err(invalid(format!(
                "`{directive}` is neither a level (error, warn, info, debug, trace, off) nor \
                 module=level"
            )));
        }
    }
    Ok(())
}

/// A logger with `filter`, writing as env_logger does (colours per `RUST_LOG_STYLE`).
fn build(filter: &str) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
        builder.parse_write_style(&style);
    }
    builder.parse_filters(filter).build()
}

/// Installs the swappable logger for this process with `RUST_LOG` if set, else `default`;
/// false if a logger was already installed (then [`set_filter`] refuses).
pub fn install(default: &str) -> bool {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => f,
        _ => default.to_string(),
    };
    let logger = build(&filter);
    let max = logger.filter();
    let swappable: &'static Swappable = Box::leak(Box::new(Swappable {
        current: RwLock::new((filter, logger)),
    }));
    if log::set_logger(swappable).is_err() {
        return false;
    }
    log::set_max_level(max);
    let _ = LOGGER.set(swappable);
    true
}

/// The filter in force, if this process's logger is the swappable one.
pub fn current_filter() -> Option<String> {
    LOGGER
        .get()
        .and_then(|l| l.current.read().ok().map(|c| c.0.clone()))
}

/// Replaces the running filter with `filter` (checked first; nothing changes if it is
/// refused); returns the filter it replaced.
pub fn set_filter(filter: &str) -> Result<String, FilterError> {
    check_filter(filter)?;
    let swappable = LOGGER.get().ok_or(FilterError::NotInstalled)?;
    let logger = build(filter.trim());
    let max = logger.filter();
    let mut current = swappable
        .current
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let old = std::mem::replace(&mut *current, (filter.trim().to_string(), logger));
    log::set_max_level(max);
    Ok(old.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_they_are_used() {
        for good in [
            "info",
            "info,btp_nips_node=debug",
            "warn,btp_nips_node::admin=trace",
            DEFAULT_FILTER,
            "off",
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("info,btp_nips_node=loud", "invalid logging spec"),
            ("verbose", "`verbose` is neither a level"),
            ("a=b=c", "invalid logging spec"),
            ("info/x/y", "too many"),
        ] {
            let err = check_filter(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
