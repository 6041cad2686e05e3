//! The sans-IO lifecycle driven with simulated time ([`support::sim::Sim`]): every test
//! jumps the clock straight to the lifecycle's next deadline, so minutes of backoff and
//! heartbeat run in microseconds and the outcomes are exact.

mod support;

use std::time::Duration;

use btp_nips_node::lifecycle::backoff::BackoffPolicy;
use btp_nips_node::lifecycle::{
    Action, Event, Fault, LifecycleConfig, LifecycleError, PeerIntent, PeerLifecycle, PeerRecord,
    PeerState, Timestamp,
};
use support::sim::{announcement, Sim, PUBKEY, T0};

fn config() -> LifecycleConfig {
    let mut config = LifecycleConfig::default();
    config.backoff.jitter = 0.0;
    config
}

#[test]
fn success_path_goes_discovering_connecting_connected() {
    let mut sim = Sim::new(config());
    assert_eq!(sim.state(), PeerState::Discovering);
    assert_eq!(sim.last_action(), Some(&Action::Resolve));
    sim.feed(Event::Resolved(announcement()));
    assert_eq!(sim.state(), PeerState::Connecting);
    assert!(sim.log.iter().any(|(_, a)| *a == Action::OpenSession));
    sim.feed(Event::SessionOpened);
    assert_eq!(sim.last_action(), Some(&Action::CheckChannel));
    sim.feed(Event::ChannelFound {
        channel_id: "0xc1".into(),
    });
    assert_eq!(sim.state(), PeerState::Connected);
    assert!(sim.log.iter().any(|(_, a)| *a == Action::Subscribe));
    let record = sim.lc.record();
    assert_eq!(record.endpoint.as_deref(), Some("ws://127.0.0.1:7001/btp"));
    assert_eq!(record.channel_id.as_deref(), Some("0xc1"));
    assert_eq!(record.failure_reason, None);
}

#[test]
fn not_found_retries_then_fails_with_reason() {
    let config = config();
    let tries = config.max_discovery_attempts;
    let retry = config.discovery_retry;
    let mut sim = Sim::new(config);
    for attempt in 1..tries {
        sim.feed(Event::NotFound);
        assert_eq!(sim.state(), PeerState::Discovering, "attempt {attempt}");
        assert_eq!(sim.step(), retry);
        assert_eq!(sim.last_action(), Some(&Action::Resolve));
    }
    sim.feed(Event::NotFound);
    assert_eq!(sim.state(), PeerState::Failed);
    assert_eq!(
        sim.lc.record().failure_reason.as_deref(),
        Some("no announcement")
    );
    assert_eq!(
        sim.lc.poll_timeout(),
        None,
        "a failed peer waits for a person"
    );
    assert_eq!(sim.count(|a| *a == Action::Resolve), tries as usize);
}

#[test]
fn an_invalid_announcement_fails_but_no_relay_answering_is_retried() {
    let mut sim = Sim::new(config());
    sim.feed(Event::ResolveFailed(Fault::Transient(
        "no relay answered".into(),
    )));
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.lc.record().reconnect_attempts, 1);
    sim.step();
    assert_eq!(sim.state(), PeerState::Discovering);
    sim.feed(Event::ResolveFailed(Fault::Permanent(
        "ilp address suffix does not match the author's pubkey".into(),
    )));
    assert_eq!(sim.state(), PeerState::Failed);
    assert!(sim
        .lc
        .record()
        .failure_reason
        .as_deref()
        .unwrap()
        .contains("suffix"));
}

#[test]
fn channel_path_goes_needed_opening_connected_with_durable_hash() {
    let config = config();
    let poll = config.channel_poll_interval;
    let timeout = config.channel_opening_timeout;
    let mut sim = Sim::new(config);
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    assert_eq!(sim.state(), PeerState::ChannelNeeded);
    assert_eq!(sim.last_action(), Some(&Action::RequestChannel));
    sim.feed(Event::ChannelAwaitingOperator);
    assert_eq!(sim.state(), PeerState::ChannelNeeded);
    sim.feed(Event::OpenChannelApproved);
    assert_eq!(sim.last_action(), Some(&Action::OpenChannel));
    sim.feed(Event::ChannelTxSigned {
        tx_hash: "0xabc".into(),
    });
    assert_eq!(sim.state(), PeerState::ChannelOpening);
    let n = sim.log.len();
    assert_eq!(
        sim.log[n - 2..]
            .iter()
            .map(|(_, a)| a.clone())
            .collect::<Vec<_>>(),
        vec![
            Action::Persist { durable: true },
            Action::BroadcastChannel {
                tx_hash: "0xabc".into()
            }
        ],
        "the hash is made durable before the transaction is broadcast"
    );
    assert_eq!(
        sim.lc.poll_timeout(),
        sim.lc.record().channel_opening_since.map(|t| t + timeout),
        "no status poll before the broadcast is done"
    );
    sim.feed(Event::ChannelBroadcast);
    assert_eq!(sim.step(), poll);
    assert_eq!(
        sim.last_action(),
        Some(&Action::AwaitChannel {
            tx_hash: "0xabc".into()
        })
    );
    sim.feed(Event::ChannelPending);
    sim.step();
    sim.feed(Event::ChannelConfirmed {
        channel_id: "0xc2".into(),
    });
    assert_eq!(sim.state(), PeerState::Connected);
    assert_eq!(sim.lc.record().channel_id.as_deref(), Some("0xc2"));
    assert_eq!(sim.lc.record().channel_opening_since, None);
}

#[test]
fn invalid_transitions_and_stale_events_are_refused() {
    let mut sim = Sim::new(config());
    let before = sim.lc.record().clone();
    assert_eq!(
        sim.lc.transition(PeerState::Connected, sim.now),
        Err(LifecycleError::InvalidTransition {
            from: PeerState::Discovering,
            to: PeerState::Connected
        })
    );
    assert!(matches!(
        sim.try_feed(Event::ChannelConfirmed {
            channel_id: "0x1".into()
        }),
        Err(LifecycleError::Unexpected { .. })
    ));
    assert!(sim.try_feed(Event::SessionOpened).is_err());
    assert!(sim
        .try_feed(Event::PongReceived {
            nonce: 1,
            rtt: None
        })
        .is_err());
    assert_eq!(sim.lc.record(), &before, "a refused event changes nothing");
    // A failed peer does not move without an explicit retry.
    sim.feed(Event::ResolveFailed(Fault::Permanent("forged".into())));
    assert!(sim.lc.transition(PeerState::Connecting, sim.now).is_err());
    assert!(sim.try_feed(Event::Resume).is_ok());
    assert_eq!(sim.state(), PeerState::Failed);
}

#[test]
fn pongs_keep_a_peer_connected_and_feed_its_latency() {
    let config = config();
    let interval = config.heartbeat_interval;
    let mut sim = Sim::new(config);
    sim.connect();
    assert_eq!(sim.lc.priority(), 3, "followed, latency unknown");
    let mut ping_times = Vec::new();
    for _ in 0..30 {
        sim.step();
        ping_times.push(sim.now);
        sim.answer_pings(Duration::from_millis(40));
        assert_eq!(sim.state(), PeerState::Connected);
    }
    assert!(ping_times.windows(2).all(|w| w[1] - w[0] == interval));
    let record = sim.lc.record();
    assert_eq!(record.rtt_us, Some(40_000));
    assert!(record.last_heartbeat.is_some());
    assert_eq!(sim.lc.priority(), 1, "followed and under 100 ms");
    assert_eq!(sim.count(|a| matches!(a, Action::SendPing { .. })), 30);
}

#[test]
fn peers_connected_at_different_moments_ping_in_the_same_rounds() {
    let config = config();
    let (interval, round) = (config.heartbeat_interval, config.heartbeat_round());
    assert_eq!(
        round,
        Duration::from_secs(1),
        "1/60 of the default interval"
    );
    // Three peers connected within the same round (T0 is on a round boundary).
    let mut pings = Vec::new();
    for offset_ms in [1, 250, 1000] {
        let mut sim = Sim::new(config.clone());
        sim.now = sim.now + Duration::from_millis(offset_ms);
        sim.connect();
        let connected_at = sim.now;
        let mut at = Vec::new();
        for _ in 0..5 {
            sim.step();
            at.push(sim.now);
            sim.answer_pings(Duration::from_millis(40));
        }
        // The first PING at most one round late, never early; then one every interval.
        let late = at[0] - connected_at;
        assert!(
            late >= interval && late < interval + round,
            "first PING after {late:?}"
        );
        assert!(at.windows(2).all(|w| w[1] - w[0] == interval), "{at:?}");
        pings.push(at);
    }
    assert!(
        pings.windows(2).all(|w| w[0] == w[1]),
        "one round for all three: {pings:?}"
    );
}

#[test]
fn a_ping_handled_late_does_not_push_the_next_ones_back() {
    let config = config();
    let (interval, round) = (config.heartbeat_interval, config.heartbeat_round());
    let mut sim = Sim::new(config.clone());
    sim.connect();
    let mut at = Vec::new();
    for _ in 0..5 {
        // Each PING's timer handled 30 ms after it was due (a busy actor thread).
        sim.step_late(Duration::from_millis(30));
        at.push(sim.now);
        sim.answer_pings(Duration::from_millis(5));
    }
    assert!(at.windows(2).all(|w| w[1] - w[0] == interval), "{at:?}");

    // A stall of more than an interval: the next PING on the next round, not a burst of
    // the ones missed.
    sim.step_late(interval + interval / 2);
    let stalled = sim.now;
    sim.answer_pings(Duration::from_millis(5));
    let next = sim.lc.poll_timeout().expect("the next PING is armed");
    assert!(
        next > sim.now && next - stalled <= round,
        "{stalled:?} then {next:?}"
    );

    // An interval that is no whole number of rounds (5 s: rounds of 83 ms) keeps its
    // cadence too.
    let interval = Duration::from_secs(5);
    let mut sim = Sim::new(LifecycleConfig {
        heartbeat_interval: interval,
        heartbeat_timeout: Duration::from_secs(4),
        ..config
    });
    sim.connect();
    let mut at = Vec::new();
    for _ in 0..5 {
        sim.step();
        at.push(sim.now);
        sim.answer_pings(Duration::from_millis(5));
    }
    assert!(at.windows(2).all(|w| w[1] - w[0] == interval), "{at:?}");
}

/// The records a run of PONGs writes, with the write interval set to `every`.
fn heartbeat_writes(every: Duration, pongs: usize, rtt: Duration) -> (Sim, Vec<Timestamp>) {
    let mut config = config();
    config.heartbeat_write_interval = every;
    let mut sim = Sim::new(config);
    sim.connect();
    // Connected and its first PING: what the connection itself wrote is not counted.
    sim.step();
    let from = sim.log.len();
    for _ in 0..pongs {
        sim.answer_pings(rtt);
        sim.step();
    }
    let writes = sim.log[from..]
        .iter()
        .filter(|(_, a)| matches!(a, Action::Persist { .. }))
        .map(|(at, _)| *at)
        .collect();
    (sim, writes)
}

#[test]
fn pongs_are_written_once_per_heartbeat_write_interval_and_reported_every_time() {
    let interval = config().heartbeat_interval;
    let (sim, writes) = heartbeat_writes(interval * 5, 20, Duration::from_millis(40));
    // The first PONG changes the priority (latency now known and low): written at once;
    // then one write per five intervals, never two closer than that.
    assert_eq!(writes.len(), 4, "writes at {writes:?}");
    assert!(writes.windows(2).all(|w| w[1] - w[0] >= interval * 5));
    let reports = sim.count(|a| matches!(a, Action::ReportHeartbeat));
    assert_eq!(
        writes.len() + reports,
        20,
        "every PONG reaches the supervisor"
    );

    let (_, writes) = heartbeat_writes(Duration::ZERO, 20, Duration::from_millis(40));
    assert_eq!(writes.len(), 20, "0 writes every PONG");
}

#[test]
fn a_pong_that_changes_the_priority_is_written_at_once() {
    let mut config = config();
    config.heartbeat_write_interval = config.heartbeat_interval * 100;
    let mut sim = Sim::new(config);
    sim.connect();
    sim.step();
    sim.answer_pings(Duration::from_millis(40));
    sim.step();
    sim.answer_pings(Duration::from_millis(40));
    assert_eq!(
        sim.last_action(),
        Some(&Action::ReportHeartbeat),
        "nothing new but the heartbeat"
    );
    // Slow enough for the smoothed latency to cross 100 ms: priority 1 → 3.
    for _ in 0..20 {
        sim.step();
        sim.answer_pings(Duration::from_millis(900));
        if sim.lc.priority() != 1 {
            break;
        }
    }
    assert_eq!(sim.lc.priority(), 3);
    assert!(matches!(sim.last_action(), Some(Action::Persist { .. })));
}

#[test]
fn latency_is_smoothed_not_replaced() {
    let mut sim = Sim::new(config());
    sim.connect();
    sim.step();
    sim.answer_pings(Duration::from_millis(80));
    sim.step();
    sim.answer_pings(Duration::from_millis(400));
    // 80 + (400 - 80) / 8 = 120
    assert_eq!(sim.lc.record().rtt_us, Some(120_000));
    assert_eq!(sim.lc.priority(), 3, "no longer under 100 ms");
}

#[test]
fn a_missing_pong_disconnects_and_schedules_one_reconnect() {
    let config = config();
    let (interval, timeout) = (config.heartbeat_interval, config.heartbeat_timeout);
    let mut sim = Sim::new(config);
    sim.connect();
    sim.step();
    sim.answer_pings(Duration::from_millis(30));
    let lost_at = sim.now - Duration::from_millis(30) + interval + timeout;
    sim.step(); // PING, never answered
    assert_eq!(sim.step(), timeout);
    assert_eq!(sim.now, lost_at);
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.last_action(), Some(&Action::Persist { durable: false }));
    assert!(sim.log.iter().any(|(_, a)| *a == Action::CloseSession));
    let record = sim.lc.record();
    assert!(record
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("heartbeat timeout"));
    assert_eq!(
        record.next_attempt_at,
        Some(lost_at + Duration::from_secs(1))
    );
    assert_eq!(sim.step(), Duration::from_secs(1));
    assert_eq!(sim.state(), PeerState::Discovering);
}

#[test]
fn a_peer_that_never_answered_any_ping_is_caught() {
    let config = config();
    let deadline = config.heartbeat_interval + config.heartbeat_timeout;
    let mut sim = Sim::new(config);
    sim.connect();
    let connected_at = sim.now;
    sim.advance(deadline);
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.lc.record().last_heartbeat, None);
    assert_eq!(
        sim.lc.record().next_attempt_at,
        Some(connected_at + deadline + Duration::from_secs(1))
    );
}

#[test]
fn backoff_doubles_to_the_cap_then_fails_after_the_last_attempt() {
    let config = config();
    let max = config.backoff.max_attempts;
    let mut sim = Sim::new(config);
    let mut waits = Vec::new();
    for _ in 0..max {
        assert_eq!(sim.state(), PeerState::Discovering);
        sim.feed(Event::ResolveFailed(Fault::Transient("relays down".into())));
        assert_eq!(sim.state(), PeerState::Disconnected);
        let resolves_before = sim.count(|a| *a == Action::Resolve);
        waits.push(sim.step().as_secs());
        // One wait per attempt: the retry fires once, at the end of that one wait.
        assert_eq!(sim.count(|a| *a == Action::Resolve), resolves_before + 1);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
    sim.feed(Event::ResolveFailed(Fault::Transient("relays down".into())));
    assert_eq!(sim.state(), PeerState::Failed);
    assert!(sim
        .lc
        .record()
        .failure_reason
        .as_deref()
        .unwrap()
        .starts_with("reconnect attempts exhausted (10)"));
}

#[test]
fn backoff_jitter_stays_within_bounds_and_varies() {
    let mut config = config();
    config.backoff.jitter = 0.25;
    let policy: BackoffPolicy = config.backoff;
    let mut seen = std::collections::HashSet::new();
    for seed in 0..50u64 {
        let mut lc = PeerLifecycle::new(PeerRecord::new(PUBKEY, false, T0), config.clone(), seed);
        lc.handle(Event::Resume, T0).unwrap();
        let mut now = T0;
        for attempt in 0..6 {
            lc.handle(Event::ResolveFailed(Fault::Transient("x".into())), now)
                .unwrap();
            let wait = lc.poll_timeout().unwrap() - now;
            let base = policy.base_delay(attempt);
            assert!(
                wait <= base && wait >= base.mul_f64(0.75),
                "{wait:?} vs {base:?}"
            );
            seen.insert(wait);
            now = lc.poll_timeout().unwrap();
            lc.handle_timeout(now);
            while lc.poll_action().is_some() {}
        }
    }
    assert!(
        seen.len() > 100,
        "jitter should spread the delays: {}",
        seen.len()
    );
}

#[test]
fn the_attempt_counter_resets_after_a_stable_connection() {
    let config = config();
    let stable = config.stable_connection;
    let mut sim = Sim::new(config);
    for _ in 0..3 {
        sim.feed(Event::ResolveFailed(Fault::Transient("down".into())));
        sim.step();
    }
    assert_eq!(sim.lc.record().reconnect_attempts, 3);
    sim.connect();
    // A short connection does not reset the counter…
    sim.advance(Duration::from_secs(30));
    sim.feed(Event::SessionLost("reset by peer".into()));
    assert_eq!(sim.lc.record().reconnect_attempts, 4);
    assert_eq!(sim.step(), Duration::from_secs(8));
    sim.connect();
    // …a stable one does, and the next loss starts over at the first delay.
    let mut elapsed = Duration::ZERO;
    while elapsed < stable {
        elapsed += sim.step();
        if let Some(Action::SendPing { .. }) = sim.last_action() {
            sim.answer_pings(Duration::ZERO);
        }
    }
    assert_eq!(sim.lc.record().reconnect_attempts, 0);
    sim.feed(Event::SessionLost("reset by peer".into()));
    assert_eq!(sim.step(), Duration::from_secs(1));
}

#[test]
fn a_deliberate_disconnect_is_intent_and_never_retried() {
    let mut sim = Sim::new(config());
    sim.connect();
    sim.feed(Event::DisconnectRequested {
        reason: "unfollowed".into(),
    });
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.lc.record().desired, PeerIntent::Disconnect);
    assert_eq!(sim.lc.poll_timeout(), None);
    assert!(sim.log.iter().any(|(_, a)| *a == Action::CloseSession));
    // A restart does not bring it back…
    let mut restarted = Sim::from_record(sim.lc.record().clone(), config());
    assert_eq!(restarted.lc.poll_timeout(), None);
    assert!(restarted.log.is_empty());
    // …an explicit retry does.
    restarted.feed(Event::RetryRequested);
    assert_eq!(restarted.state(), PeerState::Discovering);
    assert_eq!(restarted.lc.record().desired, PeerIntent::Connect);
}

#[test]
fn failed_leaves_only_by_explicit_retry() {
    let mut sim = Sim::new(config());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionFailed(Fault::Permanent(
        "authentication refused".into(),
    )));
    assert_eq!(sim.state(), PeerState::Failed);
    assert_eq!(sim.lc.poll_timeout(), None);
    sim.advance(Duration::from_secs(3600));
    assert_eq!(sim.state(), PeerState::Failed);
    sim.feed(Event::RetryRequested);
    assert_eq!(sim.state(), PeerState::Discovering);
    assert_eq!(sim.lc.record().reconnect_attempts, 0);
    assert_eq!(sim.lc.record().failure_reason, None);
}

#[test]
fn a_restart_in_channel_opening_resumes_the_wait_on_the_stored_hash() {
    let config = config();
    let timeout = config.channel_opening_timeout;
    let mut sim = Sim::new(config.clone());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    sim.feed(Event::ChannelTxSigned {
        tx_hash: "0xfeed".into(),
    });
    let sent_at = sim.now;
    let stored = sim.lc.record().clone();

    let mut after = Sim::from_record(stored, config);
    after.now = sent_at + Duration::from_secs(100);
    assert_eq!(
        after.last_action(),
        Some(&Action::AwaitChannel {
            tx_hash: "0xfeed".into()
        })
    );
    assert_eq!(
        after.count(|a| *a == Action::OpenChannel),
        0,
        "never deposits twice"
    );
    // Still unconfirmed at the original deadline → failed.
    after.feed(Event::ChannelPending);
    while after.state() == PeerState::ChannelOpening {
        after.step();
        if let Some(Action::AwaitChannel { .. }) = after.last_action() {
            after.feed(Event::ChannelPending);
        }
    }
    assert_eq!(after.state(), PeerState::Failed);
    assert_eq!(after.now, sent_at + timeout);
    assert_eq!(
        after.lc.record().failure_reason.as_deref(),
        Some("channel timeout")
    );
}

#[test]
fn a_confirmed_channel_after_restart_reopens_the_session_before_connected() {
    let mut record = PeerRecord::new(PUBKEY, true, T0);
    record.state = PeerState::ChannelOpening;
    record.endpoint = Some("ws://127.0.0.1:1/btp".into());
    record.channel_tx_hash = Some("0x1".into());
    record.channel_opening_since = Some(T0);
    let mut sim = Sim::from_record(record, config());
    sim.feed(Event::ChannelConfirmed {
        channel_id: "0xc".into(),
    });
    assert_eq!(sim.state(), PeerState::ChannelOpening);
    assert!(sim.log.iter().any(|(_, a)| *a == Action::OpenSession));
    sim.feed(Event::SessionOpened);
    assert_eq!(sim.state(), PeerState::Connected);
}

#[test]
fn a_reorg_that_drops_the_open_goes_back_to_channel_needed() {
    let mut sim = Sim::new(config());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    sim.feed(Event::ChannelTxSigned {
        tx_hash: "0x1".into(),
    });
    sim.feed(Event::ChannelBroadcast);
    sim.step();
    sim.feed(Event::ChannelDropped);
    assert_eq!(sim.state(), PeerState::ChannelNeeded);
    assert_eq!(sim.lc.record().channel_tx_hash, None);
    assert_eq!(sim.last_action(), Some(&Action::RequestChannel));
}

#[test]
fn rpc_errors_while_waiting_for_confirmations_are_transient() {
    let mut sim = Sim::new(config());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    sim.feed(Event::ChannelTxSigned {
        tx_hash: "0x1".into(),
    });
    sim.feed(Event::ChannelBroadcast);
    for _ in 0..5 {
        sim.step();
        sim.feed(Event::ChannelFailed(Fault::Transient(
            "rpc unavailable".into(),
        )));
        assert_eq!(sim.state(), PeerState::ChannelOpening);
    }
    sim.step();
    sim.feed(Event::ChannelConfirmed {
        channel_id: "0xc".into(),
    });
    assert_eq!(sim.state(), PeerState::Connected);
}

#[test]
fn a_channel_opened_by_someone_else_goes_straight_on() {
    let mut sim = Sim::new(config());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    sim.feed(Event::ChannelMissing);
    // The driver re-checks the chain (e.g. after a restart).
    let mut after = Sim::from_record(sim.lc.record().clone(), config());
    assert_eq!(after.last_action(), Some(&Action::CheckChannel));
    after.feed(Event::ChannelFound {
        channel_id: "0xtheirs".into(),
    });
    assert_eq!(after.last_action(), Some(&Action::OpenSession));
    after.feed(Event::SessionOpened);
    assert_eq!(after.state(), PeerState::Connected);
}

#[test]
fn a_connected_peer_restored_after_restart_reconnects_without_counting_an_attempt() {
    let mut sim = Sim::new(config());
    sim.connect();
    let mut after = Sim::from_record(sim.lc.record().clone(), config());
    assert_eq!(after.state(), PeerState::Disconnected);
    assert_eq!(after.lc.record().reconnect_attempts, 0);
    assert_eq!(after.step(), Duration::ZERO);
    assert_eq!(after.state(), PeerState::Discovering);
}

#[test]
fn a_restored_backoff_keeps_its_stored_attempt_time() {
    let mut sim = Sim::new(config());
    for _ in 0..4 {
        sim.feed(Event::ResolveFailed(Fault::Transient("down".into())));
        if sim.lc.record().reconnect_attempts < 4 {
            sim.step();
        }
    }
    let record = sim.lc.record().clone();
    let due = record.next_attempt_at.unwrap();
    let mut after = Sim::from_record(record, config());
    after.now = due - Duration::from_secs(3);
    assert_eq!(after.step(), Duration::from_secs(3));
    assert_eq!(after.state(), PeerState::Discovering);
}

#[test]
fn eviction_parks_without_a_retry_timer_and_a_channel_opening_peer_is_protected() {
    let mut sim = Sim::new(config());
    sim.connect();
    sim.feed(Event::Evicted);
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.lc.poll_timeout(), None);
    assert_eq!(sim.lc.record().desired, PeerIntent::Connect, "still wanted");

    let mut opening = Sim::new(config());
    opening.feed(Event::Resolved(announcement()));
    opening.feed(Event::SessionOpened);
    opening.feed(Event::ChannelMissing);
    opening.feed(Event::ChannelTxSigned {
        tx_hash: "0x1".into(),
    });
    assert!(opening.try_feed(Event::Evicted).is_err());
    assert_eq!(opening.state(), PeerState::ChannelOpening);
}

// ---- whose fault it is ----

#[test]
fn the_nodes_own_faults_never_cost_the_peer_an_attempt_nor_fail_it() {
    let config = config();
    let mut sim = Sim::new(config.clone());
    let mut waits = Vec::new();
    // Far more rounds than the peer's attempts: our relays do not answer, then our RPC.
    for round in 0..(config.backoff.max_attempts * 3) {
        if round % 2 == 0 {
            sim.feed(Event::ResolveFailed(Fault::Local(
                "no relay answered: connection refused".into(),
            )));
        } else {
            sim.feed(Event::Resolved(announcement()));
            sim.feed(Event::SessionOpened);
            sim.feed(Event::ChannelFailed(Fault::Local(
                "eth_call: no answer within 10s".into(),
            )));
        }
        assert_eq!(sim.state(), PeerState::Disconnected, "round {round}");
        let record = sim.lc.record();
        assert_eq!(record.reconnect_attempts, 0, "round {round}");
        let reason = record.failure_reason.as_deref().unwrap();
        assert!(reason.starts_with("waiting for this node: "), "{reason}");
        waits.push(sim.step());
        assert_eq!(sim.state(), PeerState::Discovering);
    }
    // The waits grow like a backoff (no busy loop during an outage), up to the maximum.
    assert_eq!(waits[0], config.backoff.initial);
    assert_eq!(waits[1], config.backoff.initial * 2);
    assert_eq!(*waits.last().unwrap(), config.backoff.max);
    assert!(waits.iter().all(|w| *w <= config.backoff.max));
    // The cause clears: the peer goes on, with no attempt spent.
    sim.connect();
    assert_eq!(sim.lc.record().reconnect_attempts, 0);
}

#[test]
fn a_policy_refusal_is_retried_with_capped_backoff_and_never_fails_the_peer() {
    let config = config();
    let mut sim = Sim::new(config.clone());
    let mut waits = Vec::new();
    for _ in 0..(config.backoff.max_attempts * 2) {
        sim.feed(Event::Resolved(announcement()));
        sim.feed(Event::SessionFailed(Fault::Refused(
            "not admitted: connection limit (1) reached".into(),
        )));
        assert_eq!(sim.state(), PeerState::Disconnected);
        waits.push(sim.step());
    }
    assert_eq!(
        sim.lc.record().reconnect_attempts,
        config.backoff.max_attempts
    );
    assert_eq!(*waits.last().unwrap(), config.backoff.max);
    // The same count of plain transient faults fails the peer: only the refusal is spared.
    let mut other = Sim::new(config.clone());
    for _ in 0..=config.backoff.max_attempts {
        other.feed(Event::Resolved(announcement()));
        other.feed(Event::SessionFailed(Fault::Transient(
            "connection refused".into(),
        )));
        if other.state() == PeerState::Failed {
            break;
        }
        other.step();
    }
    assert_eq!(other.state(), PeerState::Failed);
}

#[test]
fn a_local_fault_while_connected_drops_the_session_without_an_attempt() {
    let mut sim = Sim::new(config());
    sim.connect();
    sim.feed(Event::LocalFault(
        "operator relay unavailable: connection refused".into(),
    ));
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.lc.record().reconnect_attempts, 0);
    assert!(sim.count(|a| matches!(a, Action::CloseSession)) >= 1);
}

#[test]
fn without_required_channels_an_authenticated_session_is_connected_at_once() {
    let no_chain = LifecycleConfig {
        channels_required: false,
        ..config()
    };
    let mut sim = Sim::new(no_chain.clone());
    sim.feed(Event::Resolved(announcement()));
    sim.feed(Event::SessionOpened);
    assert_eq!(sim.state(), PeerState::Connected);
    assert_eq!(
        sim.count(|a| matches!(
            a,
            Action::CheckChannel | Action::RequestChannel | Action::OpenChannel
        )),
        0
    );
    // A peer stored while it waited for a channel is dialled again, not left waiting.
    let mut stored = PeerRecord::new(PUBKEY, true, T0);
    stored.state = PeerState::ChannelNeeded;
    stored.endpoint = Some(announcement().endpoint);
    let mut sim = Sim::from_record(stored, no_chain);
    assert_eq!(sim.state(), PeerState::Disconnected);
    assert_eq!(sim.step(), Duration::ZERO);
    assert_eq!(sim.state(), PeerState::Discovering);
}

#[test]
fn a_ping_deadline_met_while_a_ping_is_in_flight_is_not_left_in_the_past() {
    // A heartbeat interval shorter than the PONG timeout: the next PING falls due while
    // the previous one is still unanswered.
    let mut sim = Sim::new(LifecycleConfig {
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(10),
        ..config()
    });
    sim.connect();
    sim.step();
    assert!(matches!(sim.last_action(), Some(Action::SendPing { .. })));
    sim.step();
    let next = sim.lc.poll_timeout().expect("the heartbeat stays armed");
    assert!(
        next > sim.now,
        "a deadline in the past would wake the driver again at once"
    );
    // Still one PING in flight, and its PONG deadline still holds.
    assert_eq!(sim.count(|a| matches!(a, Action::SendPing { .. })), 1);
}

#[test]
fn a_peer_waiting_to_look_up_again_is_looked_up_at_once_when_followed() {
    // Known from its inbound session, not followed, no announcement found yet.
    let mut sim = Sim::new(LifecycleConfig::default());
    sim.feed(Event::FollowChanged { followed: false });
    sim.feed(Event::NotFound);
    assert_eq!(sim.state(), PeerState::Discovering);
    let resolves = sim.count(|a| matches!(a, Action::Resolve));
    sim.feed(Event::FollowChanged { followed: true });
    assert_eq!(
        sim.count(|a| matches!(a, Action::Resolve)),
        resolves + 1,
        "looked up now, not after discovery_retry_seconds"
    );
    sim.feed(Event::Resolved(support::sim::announcement()));
    assert_eq!(sim.state(), PeerState::Connecting);
}
