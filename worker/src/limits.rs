//! Flood control: token buckets per connection and per user.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(v) => v,
        None => NonZeroU32::MIN,
    }
}

/// Frames one connection may send: 50 a second, bursts of 100.
const CONN_RATE: NonZeroU32 = nz(50);
const CONN_BURST: NonZeroU32 = nz(100);
/// Messages (say, whisper, signal) one user may send over all devices.
const USER_RATE: NonZeroU32 = nz(30);
const USER_BURST: NonZeroU32 = nz(60);
/// Refused frames tolerated before the connection is closed as abusive.
const STRIKE_RATE: NonZeroU32 = nz(5);
const STRIKE_BURST: NonZeroU32 = nz(50);

/// A token bucket.
pub struct Bucket(DefaultDirectRateLimiter);

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bucket")
    }
}

impl Bucket {
    fn new(rate: NonZeroU32, burst: NonZeroU32) -> Self {
        Self(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    }

    pub fn connection() -> Self {
        Self::new(CONN_RATE, CONN_BURST)
    }

    pub fn user() -> Self {
        Self::new(USER_RATE, USER_BURST)
    }

    pub fn strikes() -> Self {
        Self::new(STRIKE_RATE, STRIKE_BURST)
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        self.0
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
