//! Per-tier request rates (SPEC §3), with `governor`'s GCRA: one keyed limiter per tier, keyed by
//! `{instance}\0{caller}`, so one app exhausting its rate does not starve the owner or other apps.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use selfcloud_core::{Config, Tier};

/// The limiters.
pub struct RateLimits {
    per_tier: [DefaultKeyedRateLimiter<String>; 3],
    clock: DefaultClock,
}

impl RateLimits {
    /// Limiters at the configured rates. A full minute's allowance may be used in a burst.
    pub fn new(config: &Config) -> RateLimits {
        let make = |tier: Tier| {
            let per_minute = NonZeroU32::new(config.rate_for(tier)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(per_minute))
        };
        RateLimits { per_tier: [make(Tier::Free), make(Tier::Growth), make(Tier::Pro)], clock: DefaultClock::default() }
    }

    /// Forget callers whose allowance is full again, so the key map does not grow with every
    /// caller ever seen.
    pub fn prune(&self) {
        for limiter in &self.per_tier {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// `Ok` if the call may proceed, else the seconds to wait.
    pub fn check(&self, tier: Tier, instance: &str, caller: &str) -> Result<(), u64> {
        let limiter = &self.per_tier[match tier {
            Tier::Free => 0,
            Tier::Growth => 1,
            Tier::Pro => 2,
        }];
        let key = format!("{instance}\0{caller}");
        limiter.check_key(&key).map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs().max(1))
    }
}
