//! What a peer controls in a session, from arbitrary bytes: a WebSocket message as the
//! connection classifies it, an auth token as the server checks it, an ILDCP answer as the
//! client reads it. None may panic; a refused token leaves the replay guard unchanged.
#![no_main]

use btp_nips_node::session::auth::{verify_token, ReplayGuard, TokenPolicy};
use btp_nips_node::session::connection::Link;
use btp_nips_node::session::ildcp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (link, _out) = Link::new(std::time::Duration::from_secs(1));
    let _ = link.on_binary(data.to_vec().into());
    let _ = ildcp::parse_response(data);
    let token = String::from_utf8_lossy(data);
    let server = nostr::Keys::generate().public_key();
    let policy = TokenPolicy {
        endpoints: vec!["ws://127.0.0.1:7700/btp".into()],
        max_age_secs: 60,
        max_skew_secs: 30,
    };
    let mut replay = ReplayGuard::default();
    if verify_token(None, &token, &server, &policy, 1_800_000_000, &mut replay).is_err() {
        assert!(replay.is_empty());
    }
});
