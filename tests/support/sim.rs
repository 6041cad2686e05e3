//! The sans-IO lifecycle driven in simulated time: a [`Sim`] owns a `PeerLifecycle`, its
//! own clock and the log of the actions it asked for, and jumps the clock straight to the
//! lifecycle's next deadline (quinn-proto's test pattern), so minutes of backoff and
//! heartbeat run in microseconds and the outcomes are exact.

use std::time::Duration;

use btp_nips_node::lifecycle::{
    Action, Announcement, Event, LifecycleConfig, LifecycleError, PeerLifecycle, PeerRecord,
    PeerState, Timestamp,
};

pub const PUBKEY: &str = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233";
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Where the peer `PUBKEY` says it is.
pub fn announcement() -> Announcement {
    Announcement {
        ilp_address: "g.btp-nips.bob.aa11bb22cc33dd44".into(),
        endpoint: "ws://127.0.0.1:7001/btp".into(),
        base_address: "0x00000000000000000000000000000000000000b0".into(),
        subscribers: None,
    }
}

/// A lifecycle with its own simulated clock and a log of the actions it asked for.
pub struct Sim {
    pub lc: PeerLifecycle,
    pub now: Timestamp,
    pub log: Vec<(Timestamp, Action)>,
}

impl Sim {
    /// A followed peer `PUBKEY` met at `T0`, resumed.
    pub fn new(config: LifecycleConfig) -> Sim {
        Self::from_record(PeerRecord::new(PUBKEY, true, T0), config)
    }

    /// `record` resumed at `T0`, as a start of the node would.
    pub fn from_record(record: PeerRecord, config: LifecycleConfig) -> Sim {
        Self::seeded(record, config, 42)
    }

    /// [`Sim::from_record`] with the lifecycle's random source (backoff jitter) seeded by `seed`.
    pub fn seeded(record: PeerRecord, config: LifecycleConfig, seed: u64) -> Sim {
        let mut sim = Sim {
            lc: PeerLifecycle::new(record, config, seed),
            now: T0,
            log: Vec::new(),
        };
        sim.feed(Event::Resume);
        sim
    }

    fn drain(&mut self) {
        while let Some(action) = self.lc.poll_action() {
            self.log.push((self.now, action));
        }
    }

    pub fn feed(&mut self, event: Event) {
        self.lc.handle(event, self.now).expect("event applies");
        self.drain();
    }

    pub fn try_feed(&mut self, event: Event) -> Result<(), LifecycleError> {
        let result = self.lc.handle(event, self.now);
        self.drain();
        result
    }

    /// Jumps to the next deadline and handles it; returns how far the clock moved.
    pub fn step(&mut self) -> Duration {
        let deadline = self.lc.poll_timeout().expect("a deadline is pending");
        let moved = deadline - self.now;
        self.now = deadline.max(self.now);
        self.lc.handle_timeout(self.now);
        self.drain();
        moved
    }

    /// Handles the next deadline `late` after it was due, as a busy thread would.
    pub fn step_late(&mut self, late: Duration) {
        let deadline = self.lc.poll_timeout().expect("a deadline is pending");
        self.now = (deadline + late).max(self.now);
        self.lc.handle_timeout(self.now);
        self.drain();
    }

    /// Moves the clock by `by`, handling every deadline on the way.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(deadline) = self.lc.poll_timeout() {
            if deadline > until {
                break;
            }
            self.step();
        }
        self.now = until;
    }

    /// The actions asked for so far, oldest first.
    pub fn actions(&self) -> Vec<Action> {
        self.log.iter().map(|(_, a)| a.clone()).collect()
    }

    pub fn last_action(&self) -> Option<&Action> {
        self.log.last().map(|(_, a)| a)
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(_, a)| pred(a)).count()
    }

    pub fn state(&self) -> PeerState {
        self.lc.state()
    }

    /// discovering → connecting → connected over an existing channel.
    pub fn connect(&mut self) {
        self.feed(Event::Resolved(announcement()));
        self.feed(Event::SessionOpened);
        self.feed(Event::ChannelFound {
            channel_id: "0xc1".into(),
        });
        assert_eq!(self.state(), PeerState::Connected);
    }

    /// Answers the PING just asked for, `rtt` later.
    pub fn answer_pings(&mut self, rtt: Duration) {
        let Some(Action::SendPing { nonce }) = self.last_action().cloned() else {
            panic!("expected a PING, got {:?}", self.last_action());
        };
        self.now = self.now + rtt;
        self.feed(Event::PongReceived { nonce, rtt: None });
    }
}
