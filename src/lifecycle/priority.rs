//! Peer priority: lower numbers matter more. Used for reconnect order after a restart,
//! for eviction at the connection limit, and for admitting inbound sessions.
//!
//! The tiers are DESIGN.md's `calculatePriority`. Inputs and where they come from:
//! - `followed`: the operator's kind 3 follow list.
//! - `rtt_us`: the smoothed PING/PONG round trip this node measured itself (microseconds).
//! - `subscribers`: a hint from the peer's own announcement metadata. No node sees a global
//!   subscriber count, so this is untrusted: it is capped at [`SUBSCRIBER_HINT_CAP`] and it
//!   can never lift an unfollowed peer above any followed one.

/// Upper bound applied to a peer's self-reported subscriber count.
pub const SUBSCRIBER_HINT_CAP: u32 = 1_000_000;

/// Round trip under which a peer counts as low-latency.
pub const LOW_LATENCY_MS: u32 = 100;

/// The best and worst priority values.
pub const BEST_PRIORITY: u8 = 1;
pub const WORST_PRIORITY: u8 = 10;

/// DESIGN.md's tiers: followed and < 100 ms → 1, followed and > 100 subscribers → 2,
/// followed → 3, > 1000 subscribers → 4, < 100 ms → 7, else 10.
pub fn calculate_priority(followed: bool, rtt_us: Option<u32>, subscribers: Option<u32>) -> u8 {
    let fast = rtt_us.is_some_and(|rtt| rtt < LOW_LATENCY_MS * 1000);
    let subscribers = subscribers.unwrap_or(0).min(SUBSCRIBER_HINT_CAP);
    match (followed, fast) {
        (true, true) => 1,
        (true, false) if subscribers > 100 => 2,
        (true, false) => 3,
        (false, _) if subscribers > 1000 => 4,
        (false, true) => 7,
        (false, false) => WORST_PRIORITY,
    }
}

/// Clamps an untrusted subscriber hint.
pub fn cap_subscriber_hint(hint: u64) -> u32 {
    hint.min(SUBSCRIBER_HINT_CAP as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_seed() {
        assert_eq!(calculate_priority(true, Some(50_000), None), 1);
        assert_eq!(calculate_priority(true, Some(150_000), Some(101)), 2);
        assert_eq!(calculate_priority(true, None, Some(100)), 3);
        assert_eq!(calculate_priority(false, Some(50_000), Some(1001)), 4);
        assert_eq!(calculate_priority(false, Some(99_999), Some(1000)), 7);
        assert_eq!(calculate_priority(false, Some(100_000), None), 10);
        assert_eq!(calculate_priority(false, None, None), 10);
    }

    #[test]
    fn an_inflated_hint_never_beats_a_followed_peer() {
        let liar = calculate_priority(false, Some(1), Some(u32::MAX));
        assert!(liar > calculate_priority(true, None, None));
        assert_eq!(cap_subscriber_hint(u64::MAX), SUBSCRIBER_HINT_CAP);
    }
}
