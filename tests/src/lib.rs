//! Test harness for the chatserver integration tests: spawns the real
//! `chatserver` master (which spawns `chatroom` workers), talks to its HTTP
//! APIs with reqwest and to rooms with a WebSocket client.
//!
//! Every wait is bounded; every spawned process is killed when the [`Server`]
//! is dropped, and the server's logs are printed when a test fails.

pub mod client;
pub mod metrics;
pub mod procs;
pub mod redis;
pub mod server;
pub mod token;

pub use client::{Client, Event};
pub use redis::RedisServer;
pub use server::{Relaunch, Resp, Server, ServerOpts};

use std::future::Future;
use std::time::Duration;

/// Default bound of one wait.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// A random alphanumeric string.
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>() {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
        }
    }
    out
}

/// A random number in `range`.
pub fn random_in(range: std::ops::Range<u32>) -> u32 {
    let n = u32::from_le_bytes(random_bytes::<4>());
    range.start + n % (range.end - range.start)
}

/// Awaits `fut` at most `dur`, panicking with `what` on timeout.
pub async fn within<T>(dur: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(dur, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {dur:?} waiting for {what}"),
    }
}

/// Polls `cond` every 20 ms until it returns `Some`, at most `dur`.
pub async fn wait_for<T, F, Fut>(dur: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + dur;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {dur:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
