//! The retry budget: retries may add at most a share of the first attempts (plus a small
//! floor per second), counted locally over a sliding window and, when named, fleet-wide
//! through a floodgate limit, so a fleet cannot multiply the load on a dependency that is
//! already down.
use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{Client, PolicyRef};

/// The share of first attempts retries may add, by default.
pub const DEFAULT_RETRY_RATIO: f64 = 0.1;
/// Retries always allowed per second, by default (so a quiet client can still retry).
pub const DEFAULT_MIN_RETRIES_PER_SEC: u32 = 1;
/// The window the local budget counts over, by default.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// A retry budget. Cheap to clone; clones share the count (give one budget to every
/// policy that calls the same dependency).
///
/// ```
/// use std::time::Duration;
/// use floodgate_client::resilience::RetryBudget;
/// let budget = RetryBudget::new().ratio(0.2).min_per_sec(0);
/// for _ in 0..10 { budget.deposit(); }
/// assert!(budget.try_withdraw_local());
/// assert!(budget.try_withdraw_local());
/// assert!(!budget.try_withdraw_local());
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    pub(crate) ratio: f64,
    pub(crate) min_per_sec: u32,
    pub(crate) window: Duration,
    pub(crate) fleet: Option<FleetBudget>,
    state: Arc<Mutex<Window>>,
}

/// The fleet-wide part: each retry must also be admitted by an Acquire on this policy.
#[derive(Clone)]
pub(crate) struct FleetBudget {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) policy: PolicyRef,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .field("window", &self.window)
            .field(
                "fleet",
                &self
                    .fleet
                    .as_ref()
                    .map(|f| (&f.namespace, &f.key, &f.policy)),
            )
            .finish()
    }
}

/// Per-second counts of first attempts and retries.
#[derive(Debug)]
struct Window {
    origin: Instant,
    /// (second since origin, first attempts, retries), one slot per second of the window.
    slots: Vec<(u64, u64, u64)>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBudget {
    /// 10% of first attempts plus 1 retry a second, counted over 10 s, local only.
    pub fn new() -> Self {
        Self {
            ratio: DEFAULT_RETRY_RATIO,
            min_per_sec: DEFAULT_MIN_RETRIES_PER_SEC,
            window: DEFAULT_BUDGET_WINDOW,
            fleet: None,
            state: Arc::new(Mutex::new(Window {
                origin: Instant::now(),
                slots: Vec::new(),
            })),
        }
    }

    /// The share of first attempts retries may add (0 to 1; checked by the builder).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries always allowed per second.
    pub fn min_per_sec(mut self, n: u32) -> Self {
        self.min_per_sec = n;
        self
    }

    /// The window (whole seconds, 1 to 60; checked by the builder).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Also require, for each retry, an Acquire of `key` against `policy` in `namespace`
    /// (e.g. a token bucket sized at 10% of the fleet's call rate): the fleet's retries
    /// together stay within it. If floodgate cannot be asked, the retry is not made.
    pub fn fleet(
        mut self,
        client: &Client,
        namespace: &str,
        key: &str,
        policy: impl Into<PolicyRef>,
    ) -> Self {
        self.fleet = Some(FleetBudget {
            client: client.clone(),
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            policy: policy.into(),
        });
        self
    }

    fn secs(&self) -> u64 {
        self.window.as_secs().clamp(1, 60)
    }

    /// Runs `f` on this second's slot and the window's (first attempts, retries) totals.
    fn with_slot<R>(&self, f: impl FnOnce(&mut (u64, u64, u64), (u64, u64)) -> R) -> R {
        let n = self.secs();
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.slots.len() != n as usize {
            w.slots = vec![(u64::MAX, 0, 0); n as usize];
        }
        let sec = Instant::now().duration_since(w.origin).as_secs();
        let i = (sec % n) as usize;
        if w.slots[i].0 != sec {
            w.slots[i] = (sec, 0, 0);
        }
        let totals = w
            .slots
            .iter()
            .filter(|s| s.0 != u64::MAX && s.0 + n > sec)
            .fold((0, 0), |(f, r), s| (f + s.1, r + s.2));
        f(&mut w.slots[i], totals)
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.with_slot(|slot, _| slot.1 += 1);
    }

    /// Takes room for one retry from the local count; false when there is none.
    pub fn try_withdraw_local(&self) -> bool {
        let floor = u64::from(self.min_per_sec) * self.secs();
        let ratio = self.ratio;
        self.with_slot(|slot, (firsts, retries)| {
            let allowed = floor as f64 + ratio * firsts as f64;
            if (retries + 1) as f64 <= allowed + 1e-9 {
                slot.2 += 1;
                true
            } else {
                false
            }
        })
    }

    /// Takes room for one retry: locally, then fleet-wide when configured.
    pub async fn try_withdraw(&self) -> bool {
        if !self.try_withdraw_local() {
            return false;
        }
        let Some(fleet) = &self.fleet else {
            return true;
        };
        let admitted = matches!(
            fleet
                .client
                .acquire(&fleet.namespace)
                .check(fleet.key.clone(), fleet.policy.clone())
                .send()
                .await,
            Ok(d) if d.allowed
        );
        if !admitted {
            // No retry is made: give the local room back, or a fleet-wide denial (or an
            // unreachable floodgate) would drain the local budget with retries never sent.
            self.refund_local();
        }
        admitted
    }

    /// Gives back one retry taken by [`try_withdraw_local`](Self::try_withdraw_local)
    /// this second (if the second has turned, the room has gone with it).
    fn refund_local(&self) {
        self.with_slot(|slot, _| slot.2 = slot.2.saturating_sub(1));
    }
}
