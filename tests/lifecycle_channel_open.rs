//! The channel-open steps of the sans-IO lifecycle, in simulated time: sign → persist the
//! hash durably → broadcast; what a crash between those steps leaves; a broadcast the chain
//! refuses; and the re-check of the chain while `channel_needed` waits for the operator.

mod support;

use btp_nips_node::lifecycle::{
    Action, Event, Fault, LifecycleConfig, PeerLifecycle, PeerRecord, PeerState,
};
use support::sim::{announcement, Sim, PUBKEY, T0};

fn config() -> LifecycleConfig {
    LifecycleConfig::default()
}

fn from_record(record: PeerRecord) -> Sim {
    Sim::seeded(record, config(), 7)
}

/// A peer with a session up and no channel: channel_needed, operator told.
fn waiting_for_operator() -> Sim {
    let mut sim = from_record(PeerRecord::new(PUBKEY, true, T0));
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    sim.feed(Event::ChannelAwaitingOperator);
    assert_eq!(sim.lc.state(), PeerState::ChannelNeeded);
    sim
}

fn signed(sim: &mut Sim, tx: &str) {
    sim.feed(Event::OpenChannelApproved);
    assert_eq!(sim.last_action(), Some(&Action::OpenChannel));
    sim.feed(Event::ChannelTxSigned { tx_hash: tx.into() });
}

#[test]
fn a_crash_between_the_durable_hash_and_the_broadcast_finds_it_dropped_and_asks_again() {
    let mut sim = waiting_for_operator();
    signed(&mut sim, "0xunsent");
    // What the database holds at the crash: the hash, in channel_opening.
    let on_disk = sim.lc.record().clone();
    assert_eq!(on_disk.state, PeerState::ChannelOpening);
    assert_eq!(on_disk.channel_tx_hash.as_deref(), Some("0xunsent"));

    let mut after = from_record(on_disk);
    let asked: Vec<Action> = after
        .actions()
        .into_iter()
        .filter(|a| !matches!(a, Action::Persist { .. }))
        .collect();
    assert_eq!(
        asked,
        vec![Action::AwaitChannel {
            tx_hash: "0xunsent".into()
        }],
        "the restart only asks where the stored hash stands (and records when it began \
         watching again): it never broadcasts or signs"
    );
    // The chain never saw it.
    after.feed(Event::ChannelDropped);
    assert_eq!(after.lc.state(), PeerState::ChannelNeeded);
    assert_eq!(after.lc.record().channel_tx_hash, None);
    assert_eq!(after.last_action(), Some(&Action::RequestChannel));
    assert_eq!(
        after.count(|a| matches!(a, Action::BroadcastChannel { .. })),
        0
    );
}

#[test]
fn a_broadcast_failure_that_may_have_reached_the_chain_keeps_waiting_on_the_hash() {
    let mut sim = waiting_for_operator();
    signed(&mut sim, "0xmaybe");
    sim.feed(Event::ChannelFailed(Fault::Transient(
        "connection reset".into(),
    )));
    assert_eq!(sim.lc.state(), PeerState::ChannelOpening);
    assert_eq!(sim.step(), config().channel_poll_interval);
    assert_eq!(
        sim.last_action(),
        Some(&Action::AwaitChannel {
            tx_hash: "0xmaybe".into()
        })
    );
}

#[test]
fn a_broadcast_the_chain_refuses_goes_back_to_the_operator_without_a_retry_loop() {
    let mut sim = waiting_for_operator();
    signed(&mut sim, "0xpoor");
    let before = sim.log.len();
    sim.feed(Event::ChannelFailed(Fault::Permanent(
        "insufficient funds".into(),
    )));
    assert_eq!(sim.lc.state(), PeerState::ChannelNeeded);
    assert_eq!(sim.lc.record().channel_tx_hash, None);
    assert!(sim
        .lc
        .record()
        .failure_reason
        .as_deref()
        .unwrap()
        .contains("insufficient funds"));
    assert!(
        !sim.actions()[before..]
            .iter()
            .any(|a| matches!(a, Action::RequestChannel | Action::OpenChannel)),
        "nothing is signed again until the operator approves"
    );
    // Only the periodic re-check of the chain is pending.
    assert_eq!(sim.step(), config().channel_recheck_interval);
    assert_eq!(sim.last_action(), Some(&Action::CheckChannel));
}

#[test]
fn channel_needed_rechecks_the_chain_and_goes_on_when_the_operator_opened_one() {
    let mut sim = waiting_for_operator();
    let recheck = config().channel_recheck_interval;
    assert_eq!(sim.step(), recheck);
    assert_eq!(sim.last_action(), Some(&Action::CheckChannel));
    // An RPC blip while re-checking: still channel_needed, checked again later.
    sim.feed(Event::ChannelFailed(Fault::Transient("rpc down".into())));
    assert_eq!(sim.lc.state(), PeerState::ChannelNeeded);
    assert_eq!(sim.step(), recheck);
    // Still none: the operator is reminded (RequestChannel), and the wait goes on.
    sim.feed(Event::ChannelMissing);
    assert_eq!(sim.last_action(), Some(&Action::RequestChannel));
    sim.feed(Event::ChannelAwaitingOperator);
    assert_eq!(sim.step(), recheck);
    // The operator opened one with `open-channel`: found, connected.
    sim.feed(Event::ChannelFound {
        channel_id: "0xopened-by-cli".into(),
    });
    assert_eq!(sim.lc.state(), PeerState::Connected);
    assert_eq!(
        sim.lc.record().channel_id.as_deref(),
        Some("0xopened-by-cli")
    );
}

#[test]
fn an_approval_replaces_the_pending_recheck() {
    let mut sim = waiting_for_operator();
    signed(&mut sim, "0xabc");
    assert_eq!(
        sim.last_action(),
        Some(&Action::BroadcastChannel {
            tx_hash: "0xabc".into()
        })
    );
    // Until the broadcast answers, the only deadline is the channel timeout.
    let deadline = sim.lc.poll_timeout().unwrap();
    assert_eq!(deadline, T0 + config().channel_opening_timeout);
    assert_eq!(
        sim.count(|a| *a == Action::CheckChannel),
        1,
        "only the first check"
    );
}

/// A peer waiting on its broadcast open transaction.
fn opening(tx: &str) -> Sim {
    let mut sim = waiting_for_operator();
    signed(&mut sim, tx);
    sim.feed(Event::ChannelBroadcast);
    assert_eq!(sim.lc.state(), PeerState::ChannelOpening);
    sim
}

#[test]
fn a_failed_peer_keeps_no_opening_deadline_or_hash_and_a_retry_asks_the_chain_first() {
    let mut sim = opening("0xslow");
    // No confirmations within the timeout: failed.
    sim.advance(config().channel_opening_timeout);
    assert_eq!(sim.lc.state(), PeerState::Failed);
    let record = sim.lc.record().clone();
    assert_eq!(record.channel_opening_since, None);
    assert_eq!(record.channel_tx_hash, None);
    assert_eq!(
        sim.lc.poll_timeout(),
        None,
        "no deadline outlives its reason"
    );
    // The operator retries: the chain is asked for a channel (the open may have landed
    // meanwhile), not the old hash with its expired deadline.
    sim.feed(Event::RetryRequested);
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    assert_eq!(sim.lc.state(), PeerState::Connecting);
    assert_eq!(sim.last_action(), Some(&Action::CheckChannel));
    sim.feed(Event::ChannelFound {
        channel_id: "0xlanded".into(),
    });
    assert_eq!(sim.lc.state(), PeerState::Connected);
}

#[test]
fn after_a_restart_the_opening_timeout_counts_from_when_the_node_watches_again() {
    let sim = opening("0xpending");
    let on_disk = sim.lc.record().clone();
    // The node was down far longer than the timeout, then starts again.
    let back = T0 + config().channel_opening_timeout * 3;
    let mut lc = PeerLifecycle::new(on_disk, config(), 7);
    lc.handle(Event::Resume, back).unwrap();
    assert_eq!(lc.state(), PeerState::ChannelOpening);
    let mut actions = Vec::new();
    while let Some(action) = lc.poll_action() {
        actions.push(action);
    }
    assert!(
        actions.contains(&Action::AwaitChannel {
            tx_hash: "0xpending".into()
        }),
        "the chain is asked where the open stands: {actions:?}"
    );
    assert_eq!(lc.record().channel_opening_since, Some(back));
    assert_eq!(
        lc.poll_timeout(),
        Some(back + config().channel_opening_timeout),
        "the deadline counts from the resumed watch, not from before the outage"
    );
}

#[test]
fn an_unconfirmed_durable_write_drops_the_broadcast_and_the_peer_waits_for_the_node() {
    let mut sim = waiting_for_operator();
    sim.feed(Event::OpenChannelApproved);
    let attempts = sim.lc.record().reconnect_attempts;
    // Driven by hand: the driver stops at the durable Persist and waits for the database.
    sim.lc
        .handle(
            Event::ChannelTxSigned {
                tx_hash: "0xheld".into(),
            },
            sim.now,
        )
        .unwrap();
    loop {
        match sim.lc.poll_action() {
            Some(Action::Persist { durable: true }) => break,
            Some(Action::BroadcastChannel { .. }) => panic!("broadcast before the write"),
            Some(_) => {}
            None => panic!("no durable write was asked for"),
        }
    }
    sim.lc
        .handle(
            Event::DurableWriteFailed("the database did not answer within 30s".into()),
            sim.now,
        )
        .unwrap();
    let rest: Vec<Action> = std::iter::from_fn(|| sim.lc.poll_action()).collect();
    assert!(
        !rest
            .iter()
            .any(|a| matches!(a, Action::BroadcastChannel { .. })),
        "the broadcast that relied on the write never goes out: {rest:?}"
    );
    let record = sim.lc.record();
    assert_eq!(record.state, PeerState::Disconnected);
    assert_eq!(record.reconnect_attempts, attempts, "no attempt is charged");
    assert_eq!(record.channel_tx_hash, None);
    assert_eq!(record.channel_opening_since, None);
    let reason = record.failure_reason.as_deref().unwrap();
    assert!(
        reason.starts_with("waiting for this node") && reason.contains("did not answer"),
        "{reason}"
    );
    assert!(record.next_attempt_at.is_some(), "it is retried by itself");
}
