//! PURE: how a run spends its deadline.
//!
//! Consul gets what the local steps do not need: a reserve at the end of the
//! deadline is kept for taking the lock, changing the address and announcing
//! it, so a promotion against a Consul that hangs still adds the VIP (and
//! exits 75) before the deadline, whatever `consul.timeout` says. After the
//! local steps, the record step may use the rest of the deadline.

use std::time::{Duration, Instant};

/// The shortest `deadline` accepted: room for a Consul call and the reserve.
pub const MIN_DEADLINE: Duration = Duration::from_millis(500);

/// The longest `deadline` (and `consul.timeout`) accepted: Patroni waits for
/// no callback this long, and larger values are typos.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// Kept back before the deadline for the process to exit.
const EXIT_MARGIN: Duration = Duration::from_millis(20);

/// The reserve for local steps: a quarter of the deadline, at least 150 ms
/// (a lock wait, a netlink round trip and an announcement take a few ms on
/// an idle host and tens of ms on a loaded one), at most 1 s.
pub fn reserve(deadline: Duration) -> Duration {
    (deadline / 4).clamp(Duration::from_millis(150), Duration::from_secs(1))
}

/// The time a Consul call may take at most before the reserve: what a
/// `consul.timeout` above it is cut to.
pub fn consul_share(deadline: Duration) -> Duration {
    deadline.saturating_sub(reserve(deadline))
}

/// One run's budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// When the run started.
    pub start: Instant,
    /// When Consul calls before the local steps must have ended.
    pub consul_until: Instant,
    /// When everything must have ended.
    pub end: Instant,
}

impl Budget {
    /// The budget of a run started at `start` with `deadline`.
    pub fn new(start: Instant, deadline: Duration) -> Budget {
        Budget {
            start,
            consul_until: start + consul_share(deadline),
            end: start + deadline.saturating_sub(EXIT_MARGIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_deadline_keeps_a_reserve_and_a_consul_share() {
        let ms = Duration::from_millis;
        assert_eq!(reserve(ms(500)), ms(150));
        assert_eq!(reserve(ms(1000)), ms(250));
        assert_eq!(reserve(ms(5000)), ms(1000));
        assert_eq!(reserve(MAX_DURATION), ms(1000));
        for d in [MIN_DEADLINE, ms(1000), ms(2000), ms(5000), MAX_DURATION] {
            let b = Budget::new(Instant::now(), d);
            assert!(b.consul_until < b.end, "{d:?}");
            assert!(
                b.end - b.consul_until >= ms(100),
                "{d:?}: reserve too small"
            );
            assert!(consul_share(d) >= ms(300), "{d:?}: Consul gets too little");
        }
    }
}
