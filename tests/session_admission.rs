//! Inbound sessions go through the node's admission: at the connection limit, held by a followed
//! peer that cannot be evicted, a stranger is refused with a BTP Error naming the limit,
//! while the followed peer itself is admitted; with room, a stranger is admitted.

mod support;

use std::time::Duration;

use btp_nips_node::config::Settings;
use btp_nips_node::node::{Node, NodeBuilder};
use btp_nips_node::ports::memory::MemoryWorld;
use btp_nips_node::session::auth::{sign_token, token_text};
use btp_nips_node::session::unix_now;
use btp_nips_node::wire::btp::Packet;
use nostr::Keys;
use support::sessions::*;
use support::wait::eventually;

/// A node on the in-memory world whose BTP server listens on loopback with the test
/// session settings (`session_yaml` overrides them); returns it and its endpoint.
async fn listening_node(
    mut settings: Settings,
    session_yaml: &str,
    keys: &Keys,
    world: &MemoryWorld,
) -> (Node, String) {
    settings.session = session_settings(session_yaml);
    let node = NodeBuilder::new(settings)
        .without_admin()
        .keys(keys.clone())
        .ports(world.ports())
        .start()
        .await
        .unwrap();
    let endpoint = node.loopback_endpoint().unwrap();
    (node, endpoint)
}

#[actix_rt::test]
async fn the_supervisor_decides_who_may_open_an_inbound_session() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let settings = Settings::from_yaml_overrides(&format!(
        "database:\n  url: \"{url}\"\nbtp_nips:\n  peer_connections:\n    max_active_connections: 1\n"
    ))
    .unwrap();
    let world = MemoryWorld::new();
    let keys = Keys::generate();
    let (node, endpoint) = listening_node(settings, "", &keys, &world).await;

    // With room, a stranger is admitted.
    let stranger = Keys::generate();
    assert!(admitted(
        &knock(&endpoint, &keys.public_key(), &stranger).await
    ));

    // A followed peer takes the only slot.
    let friend = Keys::generate();
    world.add_ready_peer(&friend.public_key().to_hex());
    node.follow(&friend.public_key().to_hex()).await.unwrap();
    // The follow is handled once answered: the peer holds its slot.
    assert_eq!(node.stats().await.unwrap().running, 1);

    let text = refusal_text(knock(&endpoint, &keys.public_key(), &stranger).await);
    assert!(
        text.contains("not admitted") && text.contains("connection limit"),
        "{text}"
    );
    assert!(admitted(
        &knock(&endpoint, &keys.public_key(), &friend).await
    ));
    node.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn peers_the_node_does_not_know_hold_a_limited_number_of_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("n.db").display());
    let settings =
        Settings::from_yaml_overrides(&format!("database:\n  url: \"{url}\"\n")).unwrap();
    let world = MemoryWorld::new();
    let keys = Keys::generate();
    let (node, endpoint) =
        listening_node(settings, "  max_unknown_inbound: 1\n", &keys, &world).await;
    let server_pk = keys.public_key();

    // One stranger holds the only slot for strangers (its connection stays open).
    let first = Keys::generate();
    let token = sign_token(&first, &endpoint, &server_pk, unix_now(), 1).unwrap();
    let mut held = raw_connect(&endpoint).await;
    send_packet(
        &mut held,
        &Packet::auth(1, &first.public_key().to_hex(), &token_text(&token)),
    )
    .await;
    assert!(admitted(&next_reaction(&mut held).await));

    // A second stranger is refused, naming the setting.
    let text = refusal_text(knock(&endpoint, &server_pk, &Keys::generate()).await);
    assert!(text.contains("session.max_unknown_inbound"), "{text}");
    // The same stranger reconnecting replaces its own session: not refused.
    assert!(admitted(&knock(&endpoint, &server_pk, &first).await));

    // Their sessions over, neither stranger holds a connection slot any more (the refused
    // one's ended before it began).
    drop(held);
    eventually(
        Duration::from_secs(10),
        "the strangers' slots given back",
        || {
            let node = node.clone();
            async move { (node.stats().await.unwrap().running == 0).then_some(()) }
        },
    )
    .await;

    // A followed peer is not counted against the strangers' limit.
    let friend = Keys::generate();
    world.add_ready_peer(&friend.public_key().to_hex());
    node.follow(&friend.public_key().to_hex()).await.unwrap();
    // The follow is handled once answered: the peer holds its slot.
    assert_eq!(node.stats().await.unwrap().running, 1);
    assert!(admitted(&knock(&endpoint, &server_pk, &friend).await));
    node.shutdown().await.unwrap();
}
