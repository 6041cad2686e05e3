//! The lifecycle's deadlines, kept in one table keyed by [`Timer`].
//!
//! Every timer belongs to exactly one peer state ([`Timer::state`]): it is armed only while
//! the peer is in that state and stopped when the peer leaves it. The table therefore never
//! holds a deadline that no longer applies, and the lifecycle's next wake-up is simply its
//! earliest entry.

use super::state::PeerState;
use super::time::Timestamp;

/// One kind of deadline.
///
/// The order of [`Timer::ALL`] is the order in which timers due at the same moment are
/// handled: those that end the state (the channel deadline, a missed PONG) come before
/// those that would act within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Every relay answered and none had the announcement: ask them again.
    DiscoveryRetry,
    /// Waiting for the operator to approve a channel: look on chain again, in case one was
    /// opened meanwhile (by the operator's `open-channel`, or by the peer).
    ChannelRecheck,
    /// Our open transaction did not confirm in time: the peer fails.
    ChannelTimeout,
    /// Check the confirmations of our open transaction again.
    ChannelPoll,
    /// The PONG to the PING in flight is due: without it the session is lost.
    PongDue,
    /// Connected long enough after a reconnect: the attempt counter resets.
    StableConnection,
    /// Time to send the next PING.
    Ping,
    /// The backoff after a lost connection has elapsed: try again from discovery.
    Reconnect,
}

const TIMER_COUNT: usize = 8;

impl Timer {
    /// Every timer, in handling order (also their index in the table).
    pub(super) const ALL: [Timer; TIMER_COUNT] = [
        Timer::DiscoveryRetry,
        Timer::ChannelRecheck,
        Timer::ChannelTimeout,
        Timer::ChannelPoll,
        Timer::PongDue,
        Timer::StableConnection,
        Timer::Ping,
        Timer::Reconnect,
    ];

    /// The only state in which this timer runs.
    pub(super) fn state(self) -> PeerState {
        match self {
            Timer::DiscoveryRetry => PeerState::Discovering,
            Timer::ChannelRecheck => PeerState::ChannelNeeded,
            Timer::ChannelTimeout | Timer::ChannelPoll => PeerState::ChannelOpening,
            Timer::PongDue | Timer::StableConnection | Timer::Ping => PeerState::Connected,
            Timer::Reconnect => PeerState::Disconnected,
        }
    }
}

/// When each [`Timer`] is due, if it is armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TimerTable {
    deadlines: [Option<Timestamp>; TIMER_COUNT],
}

impl TimerTable {
    /// Arms `timer` for `at`, replacing any earlier deadline of the same timer.
    pub(super) fn set(&mut self, timer: Timer, at: Timestamp) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Timestamp> {
        self.deadlines[timer as usize]
    }

    pub(super) fn stop_all(&mut self) {
        self.deadlines = [None; TIMER_COUNT];
    }

    /// Stops every timer that does not run in `state` (the peer just entered it).
    pub(super) fn keep_only(&mut self, state: PeerState) {
        for timer in Timer::ALL {
            if timer.state() != state {
                self.stop(timer);
            }
        }
    }

    /// The earliest armed deadline.
    pub(super) fn next_timeout(&self) -> Option<Timestamp> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Whether `timer` is armed and due at `now`.
    pub(super) fn is_expired(&self, timer: Timer, now: Timestamp) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The timers due at `now`, in handling order. The table is copied: handling one timer
    /// may stop or arm others without changing what this iterator yields.
    pub(super) fn expired(&self, now: Timestamp) -> impl Iterator<Item = Timer> {
        let table = *self;
        Timer::ALL
            .into_iter()
            .filter(move |&timer| table.is_expired(timer, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn indices_follow_the_handling_order() {
        for (i, timer) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(timer as usize, i, "{timer:?}");
        }
    }

    #[test]
    fn next_timeout_is_the_earliest_armed_deadline() {
        let mut table = TimerTable::default();
        assert_eq!(table.next_timeout(), None);
        table.set(Timer::Ping, at(30));
        table.set(Timer::PongDue, at(20));
        table.set(Timer::StableConnection, at(40));
        assert_eq!(table.next_timeout(), Some(at(20)));
        table.stop(Timer::PongDue);
        assert_eq!(table.next_timeout(), Some(at(30)));
        table.stop_all();
        assert_eq!(table.next_timeout(), None);
    }

    #[test]
    fn expired_lists_due_timers_in_handling_order() {
        let mut table = TimerTable::default();
        table.set(Timer::Ping, at(10));
        table.set(Timer::StableConnection, at(30));
        table.set(Timer::PongDue, at(20));
        let due: Vec<Timer> = table.expired(at(20)).collect();
        assert_eq!(due, [Timer::PongDue, Timer::Ping]);
        assert!(table.is_expired(Timer::Ping, at(10)));
        assert!(!table.is_expired(Timer::StableConnection, at(29)));
        assert!(!table.is_expired(Timer::Reconnect, at(1000)));
    }

    #[test]
    fn entering_a_state_stops_the_timers_of_the_others() {
        let mut table = TimerTable::default();
        for timer in Timer::ALL {
            table.set(timer, at(1));
        }
        table.keep_only(PeerState::ChannelOpening);
        let left: Vec<Timer> = table.expired(at(1)).collect();
        assert_eq!(left, [Timer::ChannelTimeout, Timer::ChannelPoll]);
    }
}
