//! Shared by the p2p tests: node settings for loopback and test data.
#![allow(dead_code)]

use std::time::Duration;

use selfcloud_p2p::Config;

/// Listen on a free loopback port; wait up to `want_secs` for a block.
pub fn config(want_secs: u64) -> Config {
    Config { listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(), agent: "selfcloud-test".into(), want_timeout: Duration::from_secs(want_secs) }
}

/// `len` bytes of xorshift64 from `seed`: no two chunks alike.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
