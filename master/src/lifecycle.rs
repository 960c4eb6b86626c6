//! A room's lifecycle: one state at a time, published through a `watch`, with
//! every transition in this file. Whoever learns something about a room (the
//! supervisor when its worker exits, the IPC session when the worker says it
//! listens, an operator's order) calls the transition named for it; a
//! transition that does not apply to the current state changes nothing and
//! says so.
//!
//! ```text
//!            spawning            listening
//!  (new) ─► Starting ─────────────────────► Running ──restart──► Restarting
//!             │  ▲ port_taken                  │  crashed           │
//!             │  └── PortTaken ◄──┘            └───────────────────►│
//!             │                                                     │ spawning
//!             └─ stop ─► Stopping ─► Stopped        Starting ◄──────┘
//!  any state but Stopped/Failed ── stop ─► Stopping ── stopped ─► Stopped
//!  any state but Stopped/Failed ── failed ─► Failed
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Where a room is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// A worker is being spawned, or has not said it listens yet.
    Starting,
    /// The worker could not bind its port: it exits, and the next one is
    /// spawned on another port.
    PortTaken,
    /// The worker listens on `port`: the room accepts connections.
    Running { pid: u32, port: u16 },
    /// The worker crashed or an operator asked for a restart: a new worker
    /// follows on the same port.
    Restarting,
    /// Asked to stop (or it ended by itself): the worker is exiting and the
    /// room is over. A create of the same name waits for `Stopped`.
    Stopping,
    /// The worker exited and the room is gone: its name and port are free.
    Stopped,
    /// Given up (listed with the reason); its port is free.
    Failed(String),
    // Room for `Incompatible`: a worker alive on its port that speaks
    // another IPC version, never respawned until restarted on purpose.
}

impl Lifecycle {
    /// The state's name in the APIs and the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Starting | Self::PortTaken | Self::Restarting => "starting",
            Self::Running { .. } => "ready",
            Self::Stopping => "closing",
            Self::Stopped => "closed",
            Self::Failed(_) => "failed",
        }
    }

    /// Whether the room is over (nothing follows these states).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Stopped | Self::Failed(_))
    }

    /// Whether the state lasts only until the supervisor or the worker
    /// moves it on (a create waits through these).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Starting | Self::PortTaken | Self::Restarting)
    }
}

/// One room's lifecycle state and its transitions.
#[derive(Debug)]
pub struct Life {
    tx: watch::Sender<Lifecycle>,
    /// Whether the state is final, readable without the watch's lock (the
    /// registry asks it of every room when it picks a port).
    over: AtomicBool,
}

impl Life {
    pub fn new(initial: Lifecycle) -> Self {
        Self {
            over: AtomicBool::new(initial.is_final()),
            tx: watch::channel(initial).0,
        }
    }

    /// Whether the room is over (stopped or failed): a final state stays.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn get(&self) -> Lifecycle {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later state.
    pub fn subscribe(&self) -> watch::Receiver<Lifecycle> {
        self.tx.subscribe()
    }

    /// Applies `step` to the current state; true when it changed it.
    fn apply(&self, step: impl FnOnce(&Lifecycle) -> Option<Lifecycle>) -> bool {
        self.tx.send_if_modified(|s| match step(s) {
            Some(next) => {
                if next.is_final() {
                    self.over.store(true, Ordering::Release);
                }
                *s = next;
                true
            }
            None => false,
        })
    }

    /// The supervisor spawns a worker: from `Starting`, `PortTaken` or
    /// `Restarting`. False when the room is stopping or over (no spawn).
    pub fn spawning(&self) -> bool {
        self.apply(|s| s.is_transient().then_some(Lifecycle::Starting))
    }

    /// The worker says it listens: `Starting` → `Running`.
    pub fn listening(&self, pid: u32, port: u16) -> bool {
        self.apply(|s| (*s == Lifecycle::Starting).then_some(Lifecycle::Running { pid, port }))
    }

    /// The worker could not bind its port: `Starting` → `PortTaken`.
    pub fn port_taken(&self) -> bool {
        self.apply(|s| (*s == Lifecycle::Starting).then_some(Lifecycle::PortTaken))
    }

    /// An operator asks for a new worker: `Running` → `Restarting`.
    pub fn restart(&self) -> bool {
        self.apply(|s| matches!(s, Lifecycle::Running { .. }).then_some(Lifecycle::Restarting))
    }

    /// The worker died without being asked to: a new one follows.
    pub fn crashed(&self) -> bool {
        self.apply(|s| {
            (s.is_transient() || matches!(s, Lifecycle::Running { .. }))
                .then_some(Lifecycle::Restarting)
        })
    }

    /// The room is asked to end (or ends by itself): → `Stopping`, from any
    /// state but `Stopping` and the final ones.
    pub fn stop(&self) -> bool {
        self.apply(|s| (!s.is_final() && *s != Lifecycle::Stopping).then_some(Lifecycle::Stopping))
    }

    /// The worker exited and the room is gone.
    pub fn stopped(&self) -> bool {
        self.apply(|s| (!s.is_final()).then_some(Lifecycle::Stopped))
    }

    /// The room is given up.
    pub fn failed(&self, reason: String) -> bool {
        self.apply(|s| (!s.is_final()).then_some(Lifecycle::Failed(reason)))
    }

    /// Waits (at most `timeout`) until the state is not transient, and
    /// returns it: running, stopping or over. A timeout returns the
    /// transient state.
    pub async fn settled(&self, timeout: Duration) -> Lifecycle {
        self.wait_until(timeout, |s| !s.is_transient()).await
    }

    /// Waits (at most `timeout`) until the room is over, and returns the
    /// state then.
    pub async fn over(&self, timeout: Duration) -> Lifecycle {
        self.wait_until(timeout, Lifecycle::is_final).await
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&Lifecycle) -> bool,
    ) -> Lifecycle {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(done)).await;
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_runs_restarts_and_stops() {
        let l = Life::new(Lifecycle::Starting);
        assert!(l.spawning());
        assert!(l.listening(7, 4000));
        assert_eq!(l.get(), Lifecycle::Running { pid: 7, port: 4000 });
        assert!(
            !l.listening(8, 4001),
            "only a starting room starts listening"
        );
        assert!(l.restart());
        assert_eq!(l.get().label(), "starting");
        assert!(l.spawning());
        assert!(l.listening(9, 4000));
        assert!(l.stop());
        assert!(!l.stop(), "a stopping room is not stopped twice");
        assert!(!l.spawning(), "a stopping room gets no new worker");
        assert!(!l.restart());
        assert!(!l.listening(10, 4000));
        assert!(l.stopped());
        assert!(!l.failed("late".into()), "a final state stays");
        assert_eq!(l.get(), Lifecycle::Stopped);
    }

    #[test]
    fn a_taken_port_and_a_crash_lead_to_a_new_spawn() {
        let l = Life::new(Lifecycle::Starting);
        assert!(l.port_taken());
        assert!(l.spawning());
        assert_eq!(l.get(), Lifecycle::Starting);
        assert!(l.listening(1, 5000));
        assert!(l.crashed());
        assert_eq!(l.get(), Lifecycle::Restarting);
        assert!(l.spawning());
        assert!(l.failed("budget".into()));
        assert!(!l.stop(), "a failed room is not stopped");
        assert_eq!(l.get().label(), "failed");
    }

    #[tokio::test]
    async fn waits_end_on_the_awaited_states() {
        let l = std::sync::Arc::new(Life::new(Lifecycle::Starting));
        let l2 = l.clone();
        let t = tokio::spawn(async move { l2.settled(Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        l.listening(3, 6000);
        assert_eq!(
            t.await.ok(),
            Some(Lifecycle::Running { pid: 3, port: 6000 })
        );
        l.stop();
        let l3 = l.clone();
        let t = tokio::spawn(async move { l3.over(Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        l.stopped();
        assert_eq!(t.await.ok(), Some(Lifecycle::Stopped));
        let timed_out = Life::new(Lifecycle::Restarting)
            .settled(Duration::from_millis(10))
            .await;
        assert_eq!(timed_out, Lifecycle::Restarting);
    }
}
