//! Mutual authentication inside the BTP auth exchange, as plain logic with time as input.
//!
//! **Nostr mode** (between btp-nips nodes). The client's `auth_username` is its Nostr
//! pubkey (hex) and its `auth_token` a signed Nostr event of kind [`TOKEN_KIND`]:
//! a statement "I, `pubkey`, open a session to `endpoint` of server `p`", with a random
//! `nonce` and `created_at`. The server accepts it once: the signature must verify, the
//! author must be the username, `endpoint` one of the server's own endpoints, `p` the
//! server's own pubkey, `created_at` no older than `max_age` (and not in the future beyond
//! `max_skew`), and its id never seen before (a replay guard remembers ids until they
//! expire). The server then proves its own key in the Response: an event of kind
//! [`PROOF_KIND`] naming the token (`e`), the client (`p`) and the endpoint, which the
//! client checks against the pubkey it meant to reach.
//!
//! **Shared-secret mode** (plain ILP peers such as `ilp-plugin-btp`): the username names
//! a configured peer and the token must equal its secret (compared in constant time).

use std::collections::HashMap;

use nostr::{Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, Tag, Timestamp};

/// Kind of the client's session token (ephemeral range: relays do not store it).
pub const TOKEN_KIND: u16 = 27301;
/// Kind of the server's proof in the auth Response.
pub const PROOF_KIND: u16 = 27302;
/// Protocol-data entry of the auth Response carrying the server's proof.
pub const PROTOCOL_AUTH_PROOF: &str = "auth_proof";
/// Content of both events, so a person reading one knows what it is.
const TOKEN_CONTENT: &str = "btp-nips session authentication";

/// Why a token or proof was refused; the text is what the peer and the log see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    #[error("auth_token: not a Nostr event: {0}")]
    Malformed(String),
    #[error("auth_token: signature or id does not verify (forged)")]
    Forged,
    #[error("auth_token: kind {found}, expected {expected}")]
    WrongKind { found: u16, expected: u16 },
    #[error("auth_username `{username}` is not the token's author {author}")]
    WrongAuthor { username: String, author: String },
    #[error("auth_token: tag `{0}` missing")]
    MissingTag(&'static str),
    #[error("auth_token: bound to endpoint `{found}`, this server is {expected}")]
    WrongEndpoint { found: String, expected: String },
    #[error("auth_token: bound to pubkey {found}, this server is {expected}")]
    WrongServer { found: String, expected: String },
    #[error("auth_token: expired (created {age}s ago, at most {max_age}s allowed)")]
    Expired { age: u64, max_age: u64 },
    #[error("auth_token: created {ahead}s in the future (at most {max_skew}s of clock skew)")]
    FromTheFuture { ahead: u64, max_skew: u64 },
    #[error("auth_token: replayed (token {0} was already used)")]
    Replayed(String),
    #[error("auth_username `{0}`: unknown peer and not a Nostr pubkey")]
    UnknownUser(String),
    #[error("auth_token: wrong shared secret for `{0}`")]
    WrongSecret(String),
    #[error("auth_proof: {0}")]
    BadProof(String),
}

/// Signs the client's token for a session to `server` at `endpoint`.
pub fn sign_token(
    keys: &Keys,
    endpoint: &str,
    server: &PublicKey,
    now_secs: u64,
    nonce: u64,
) -> Result<Event, AuthRefusal> {
    EventBuilder::new(Kind::Custom(TOKEN_KIND), TOKEN_CONTENT)
        .tags(tags(&[
            ("endpoint", endpoint),
            ("p", &server.to_hex()),
            ("nonce", &format!("{nonce:016x}")),
        ])?)
        .custom_created_at(Timestamp::from_secs(now_secs))
        .sign_with_keys(keys)
        .map_err(|e| AuthRefusal::Malformed(format!("cannot sign: {e}")))
}

fn tags(pairs: &[(&str, &str)]) -> Result<Vec<Tag>, AuthRefusal> {
    pairs
        .iter()
        .map(|(k, v)| Tag::parse([*k, *v]).map_err(|e| AuthRefusal::Malformed(e.to_string())))
        .collect()
}

fn tag<'a>(event: &'a Event, name: &'static str) -> Result<&'a str, AuthRefusal> {
    event
        .tags
        .iter()
        .find_map(|t| match t.as_slice() {
            [k, v, ..] if k == name => Some(v.as_str()),
            _ => None,
        })
        .ok_or(AuthRefusal::MissingTag(name))
}

fn parse_event(json: &str, expected_kind: u16) -> Result<Event, AuthRefusal> {
    let event = Event::from_json(json).map_err(|e| AuthRefusal::Malformed(e.to_string()))?;
    if event.verify().is_err() {
        return Err(AuthRefusal::Forged);
    }
    let found = event.kind.as_u16();
    if found != expected_kind {
        return Err(AuthRefusal::WrongKind {
            found,
            expected: expected_kind,
        });
    }
    Ok(event)
}

/// Remembers the ids of accepted tokens until they could no longer be accepted anyway.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// Token id → the time (Unix seconds) after which it is expired regardless.
    seen: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Records `id`, valid until `until`; false if it was already there.
    fn insert(&mut self, id: String, until: u64, now: u64) -> bool {
        if self.seen.len() >= 1024 {
            self.seen.retain(|_, t| *t >= now);
        }
        if self.seen.get(&id).is_some_and(|t| *t >= now) {
            return false;
        }
        self.seen.insert(id, until);
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// What the server checks tokens against.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// The endpoints this server is reachable at (as announced); a token names one.
    pub endpoints: Vec<String>,
    /// How old a token may be, seconds.
    pub max_age_secs: u64,
    /// How far in the future `created_at` may be, seconds (clock skew).
    pub max_skew_secs: u64,
}

/// Checks a client's token (sans clock: `now_secs` is given). On success returns the
/// client's pubkey and the token (to build the proof), and the token id is spent.
pub fn verify_token(
    username: Option<&str>,
    token: &str,
    server: &PublicKey,
    policy: &TokenPolicy,
    now_secs: u64,
    replay: &mut ReplayGuard,
) -> Result<Event, AuthRefusal> {
    let event = parse_event(token, TOKEN_KIND)?;
    let author = event.pubkey.to_hex();
    if let Some(username) = username {
        if !username.eq_ignore_ascii_case(&author) {
            return Err(AuthRefusal::WrongAuthor {
                username: username.to_string(),
                author,
            });
        }
    }
    let endpoint = tag(&event, "endpoint")?;
    if !policy.endpoints.iter().any(|e| e == endpoint) {
        return Err(AuthRefusal::WrongEndpoint {
            found: endpoint.to_string(),
            expected: policy.endpoints.join(" or "),
        });
    }
    let bound = tag(&event, "p")?;
    if !bound.eq_ignore_ascii_case(&server.to_hex()) {
        return Err(AuthRefusal::WrongServer {
            found: bound.to_string(),
            expected: server.to_hex(),
        });
    }
    tag(&event, "nonce")?;
    let created = event.created_at.as_secs();
    if created > now_secs + policy.max_skew_secs {
        return Err(AuthRefusal::FromTheFuture {
            ahead: created - now_secs,
            max_skew: policy.max_skew_secs,
        });
    }
    let age = now_secs.saturating_sub(created);
    if age > policy.max_age_secs {
        return Err(AuthRefusal::Expired {
            age,
            max_age: policy.max_age_secs,
        });
    }
    let until = created + policy.max_age_secs;
    if !replay.insert(event.id.to_hex(), until, now_secs) {
        return Err(AuthRefusal::Replayed(event.id.to_hex()));
    }
    Ok(event)
}

/// The server's proof for an accepted `token`.
pub fn sign_proof(keys: &Keys, token: &Event, now_secs: u64) -> Result<Event, AuthRefusal> {
    let endpoint = tag(token, "endpoint")?;
    EventBuilder::new(Kind::Custom(PROOF_KIND), TOKEN_CONTENT)
        .tags(tags(&[
            ("e", &token.id.to_hex()),
            ("p", &token.pubkey.to_hex()),
            ("endpoint", endpoint),
        ])?)
        .custom_created_at(Timestamp::from_secs(now_secs))
        .sign_with_keys(keys)
        .map_err(|e| AuthRefusal::Malformed(format!("cannot sign: {e}")))
}

/// The client checks the server's proof: signed by `expected_server`, for our `token`.
pub fn verify_proof(
    proof: &str,
    token: &Event,
    expected_server: &PublicKey,
) -> Result<(), AuthRefusal> {
    let event = parse_event(proof, PROOF_KIND).map_err(|e| AuthRefusal::BadProof(e.to_string()))?;
    if event.pubkey != *expected_server {
        return Err(AuthRefusal::BadProof(format!(
            "signed by {}, expected {}",
            event.pubkey.to_hex(),
            expected_server.to_hex()
        )));
    }
    let bad = |e: AuthRefusal| AuthRefusal::BadProof(e.to_string());
    if tag(&event, "e").map_err(bad)? != token.id.to_hex()
        || tag(&event, "p").map_err(bad)? != token.pubkey.to_hex()
    {
        return Err(AuthRefusal::BadProof(
            "does not answer our token (tags e/p)".into(),
        ));
    }
    Ok(())
}

/// Compares a shared secret in time independent of where the first difference is.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    diff == 0
}

/// Parses a pubkey given as hex (or npub).
pub fn parse_pubkey(text: &str) -> Result<PublicKey, AuthRefusal> {
    PublicKey::parse(text).map_err(|e| AuthRefusal::Malformed(format!("pubkey `{text}`: {e}")))
}

/// The token as the `auth_token` text.
pub fn token_text(event: &Event) -> String {
    event.as_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const ENDPOINT: &str = "ws://127.0.0.1:7001/btp";

    fn policy() -> TokenPolicy {
        TokenPolicy {
            endpoints: vec![ENDPOINT.into()],
            max_age_secs: 60,
            max_skew_secs: 5,
        }
    }

    fn setup() -> (Keys, Keys, ReplayGuard) {
        (Keys::generate(), Keys::generate(), ReplayGuard::default())
    }

    fn check(
        client: &Keys,
        server: &Keys,
        token: &Event,
        now: u64,
        replay: &mut ReplayGuard,
    ) -> Result<Event, AuthRefusal> {
        verify_token(
            Some(&client.public_key().to_hex()),
            &token_text(token),
            &server.public_key(),
            &policy(),
            now,
            replay,
        )
    }

    #[test]
    fn a_fresh_bound_token_is_accepted_once_and_the_proof_checks_out() {
        let (client, server, mut replay) = setup();
        let token = sign_token(&client, ENDPOINT, &server.public_key(), NOW, 7).unwrap();
        let accepted = check(&client, &server, &token, NOW + 3, &mut replay).unwrap();
        assert_eq!(accepted.pubkey, client.public_key());
        let proof = sign_proof(&server, &accepted, NOW + 3).unwrap();
        verify_proof(&proof.as_json(), &token, &server.public_key()).unwrap();
        // The same proof does not vouch for another server key.
        let other = Keys::generate();
        assert!(matches!(
            verify_proof(&proof.as_json(), &token, &other.public_key()),
            Err(AuthRefusal::BadProof(_))
        ));
        // Nor for another token of ours.
        let token2 = sign_token(&client, ENDPOINT, &server.public_key(), NOW, 8).unwrap();
        assert!(verify_proof(&proof.as_json(), &token2, &server.public_key()).is_err());
        assert_eq!(
            check(&client, &server, &token, NOW + 4, &mut replay),
            Err(AuthRefusal::Replayed(token.id.to_hex()))
        );
    }

    #[test]
    fn expired_future_misbound_and_forged_tokens_are_refused() {
        let (client, server, mut replay) = setup();
        let token = sign_token(&client, ENDPOINT, &server.public_key(), NOW, 1).unwrap();
        assert_eq!(
            check(&client, &server, &token, NOW + 61, &mut replay),
            Err(AuthRefusal::Expired {
                age: 61,
                max_age: 60
            })
        );
        // Exactly at the limit it is still fresh.
        assert!(check(&client, &server, &token, NOW + 60, &mut replay).is_ok());

        let future = sign_token(&client, ENDPOINT, &server.public_key(), NOW + 10, 2).unwrap();
        assert!(matches!(
            check(&client, &server, &future, NOW, &mut replay),
            Err(AuthRefusal::FromTheFuture { ahead: 10, .. })
        ));

        let elsewhere = sign_token(
            &client,
            "ws://127.0.0.1:9999/btp",
            &server.public_key(),
            NOW,
            3,
        )
        .unwrap();
        assert!(matches!(
            check(&client, &server, &elsewhere, NOW, &mut replay),
            Err(AuthRefusal::WrongEndpoint { .. })
        ));

        let other_server = Keys::generate();
        let misbound = sign_token(&client, ENDPOINT, &other_server.public_key(), NOW, 4).unwrap();
        assert!(matches!(
            check(&client, &server, &misbound, NOW, &mut replay),
            Err(AuthRefusal::WrongServer { .. })
        ));

        // Someone else's valid token presented under our name.
        let mallory = Keys::generate();
        let theirs = sign_token(&mallory, ENDPOINT, &server.public_key(), NOW, 5).unwrap();
        assert!(matches!(
            check(&client, &server, &theirs, NOW, &mut replay),
            Err(AuthRefusal::WrongAuthor { .. })
        ));

        // A token whose content was changed after signing.
        let fresh = sign_token(&client, ENDPOINT, &server.public_key(), NOW, 6).unwrap();
        let tampered = token_text(&fresh).replace(ENDPOINT, "ws://127.0.0.1:7001/btq");
        assert_eq!(
            verify_token(
                None,
                &tampered,
                &server.public_key(),
                &policy(),
                NOW,
                &mut replay
            ),
            Err(AuthRefusal::Forged)
        );
        assert!(matches!(
            verify_token(
                None,
                "not json",
                &server.public_key(),
                &policy(),
                NOW,
                &mut replay
            ),
            Err(AuthRefusal::Malformed(_))
        ));
    }

    #[test]
    fn replay_guard_forgets_only_expired_ids() {
        let mut guard = ReplayGuard::default();
        for i in 0..1024 {
            assert!(guard.insert(format!("id{i}"), 100, 50));
        }
        assert!(!guard.insert("id0".into(), 100, 60));
        // Past their validity, the next insertion prunes them.
        assert!(guard.insert("new".into(), 300, 200));
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn shared_secrets_compare_exactly() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cret", "s3cre"));
        assert!(!secrets_match("s3cre", "s3cret"));
        assert!(!secrets_match("", "x"));
        assert!(!secrets_match("s3creT", "s3cret"));
    }
}
