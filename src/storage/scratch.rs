//! A PostgreSQL database created for one test or benchmark run and dropped (with its
//! connections) when it goes out of scope, so runs never share state and can go in
//! parallel on one server.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// A fresh database on the server named by an admin URL.
pub struct ScratchPostgres {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchPostgres {
    /// Creates `<prefix>_<random>` on the server behind `admin_url`.
    pub fn create(admin_url: &str, prefix: &str) -> Result<ScratchPostgres, String> {
        let name = format!("{prefix}_{:016x}", fastrand::u64(..));
        let mut admin = PgConnection::establish(admin_url)
            .map_err(|e| format!("PostgreSQL is not reachable at {admin_url}: {e}"))?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("cannot create database {name}: {e}"))?;
        Ok(ScratchPostgres {
            url: with_database_name(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
        })
    }

    /// URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection to the server's admin database (for killing backends and the like).
    pub fn admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).expect("admin connection")
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database name (the last path segment) replaced by `name`.
pub fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database_name;

    #[test]
    fn replaces_only_the_database_name() {
        assert_eq!(
            with_database_name("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database_name("postgres://h", "x"), "postgres://h/x");
    }
}
