//! The breaker's sliding window of call outcomes (twin of the window part of
//! `lua/breaker.lua`).
//!
//! - A **count** window is a ring of the last N calls, one code per call (bit 0 failure,
//!   bit 1 slow). A report of n calls with f failures and s slow calls adds them as one block
//!   whose failures and slow calls are spread evenly (call i of the block is a failure when
//!   `floor((i+1)f/n) > floor(if/n)`), so a block larger than the ring keeps its proportions;
//!   the oldest calls leave first.
//! - A **time** window holds one bucket per second of the last N seconds; a report counts in
//!   the bucket of `now`. Totals are kept incrementally: moving to a later second subtracts
//!   exactly the buckets that fall out.
use super::config::WindowKind;
use crate::time::{Micros, SECOND};

/// Calls, failures and slow calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slow (in addition to their outcome).
    pub slow: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.calls += o.calls;
        self.failures += o.failures;
        self.slow += o.slow;
    }
    fn sub(&mut self, o: Counts) {
        self.calls -= o.calls;
        self.failures -= o.failures;
        self.slow -= o.slow;
    }
}

/// One second of a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The second (Unix time) the bucket counts.
    pub epoch: u64,
    /// What it counted.
    pub counts: Counts,
}

/// A window of outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The last `size` calls.
    Count {
        /// Calls kept.
        size: u32,
        /// One code per call: bit 0 failure, bit 1 slow.
        ring: Vec<u8>,
        /// Where the next call is written.
        pos: u32,
        /// Calls held (at most `size`).
        filled: u32,
        /// Sums over the ring.
        totals: Counts,
    },
    /// The last `size` seconds.
    Time {
        /// Seconds kept.
        size: u32,
        /// Bucket `epoch % size`, if ever written.
        buckets: Vec<Option<Bucket>>,
        /// The latest second written.
        head: u64,
        /// Sums over buckets with `epoch` in `(head - size, head]`.
        totals: Counts,
    },
}

/// Code of the `i`-th call (0-based) of a block of `n` calls with `f` failures and `s` slow.
pub fn block_code(i: u64, n: u64, f: u64, s: u64) -> u8 {
    let fail = (i + 1) * f / n > i * f / n;
    let slow = (i + 1) * s / n > i * s / n;
    u8::from(fail) | (u8::from(slow) << 1)
}

fn code_counts(code: u8) -> Counts {
    Counts {
        calls: 1,
        failures: u64::from(code & 1),
        slow: u64::from(code >> 1 & 1),
    }
}

impl Window {
    /// An empty window of `kind` and `size`.
    pub fn new(kind: WindowKind, size: u32) -> Self {
        match kind {
            WindowKind::Count => Window::Count {
                size,
                ring: Vec::new(),
                pos: 0,
                filled: 0,
                totals: Counts::default(),
            },
            WindowKind::Time => Window::Time {
                size,
                buckets: vec![None; size as usize],
                head: 0,
                totals: Counts::default(),
            },
        }
    }

    /// Whether this window has `kind` and `size` (a reload may change them; the window is
    /// then started afresh).
    pub fn fits(&self, kind: WindowKind, size: u32) -> bool {
        match self {
            Window::Count { size: s, .. } => kind == WindowKind::Count && *s == size,
            Window::Time { size: s, .. } => kind == WindowKind::Time && *s == size,
        }
    }

    /// Moves a time window to `now`, dropping the seconds that left it (no-op for counts).
    pub fn advance(&mut self, now: Micros) {
        if let Window::Time {
            size,
            buckets,
            head,
            totals,
        } = self
        {
            let e = now / SECOND;
            let n = u64::from(*size);
            if e <= *head {
                return;
            }
            if e - *head >= n {
                *totals = Counts::default();
            } else {
                for ep in *head + 1..=e {
                    let idx = (ep % n) as usize;
                    if let Some(b) = buckets[idx]
                        && b.epoch + n == ep
                    {
                        totals.sub(b.counts);
                    }
                }
            }
            *head = e;
        }
    }

    /// Adds a block of `c.calls` calls at `now` (the window must already be advanced).
    pub fn add(&mut self, now: Micros, c: Counts) {
        if c.calls == 0 {
            return;
        }
        match self {
            Window::Count {
                size,
                ring,
                pos,
                filled,
                totals,
            } => {
                let n = u64::from(*size);
                let k = c.calls.min(n);
                for j in 0..k {
                    let code = block_code(c.calls - k + j, c.calls, c.failures, c.slow);
                    let idx = ((u64::from(*pos) + j) % n) as usize;
                    if idx < ring.len() {
                        totals.sub(code_counts(ring[idx]));
                        ring[idx] = code;
                    } else {
                        ring.push(code);
                    }
                    totals.add(code_counts(code));
                }
                *pos = ((u64::from(*pos) + k) % n) as u32;
                *filled = (u64::from(*filled) + k).min(n) as u32;
            }
            Window::Time {
                size,
                buckets,
                totals,
                ..
            } => {
                let e = now / SECOND;
                let idx = (e % u64::from(*size)) as usize;
                match &mut buckets[idx] {
                    Some(b) if b.epoch == e => b.counts.add(c),
                    slot => {
                        *slot = Some(Bucket {
                            epoch: e,
                            counts: c,
                        })
                    }
                }
                totals.add(c);
            }
        }
    }

    /// The window's sums as of `now` (a time window is read as if advanced; nothing changes).
    pub fn totals(&self, now: Micros) -> Counts {
        match self {
            Window::Count { totals, .. } => *totals,
            Window::Time { .. } => {
                let mut w = self.clone();
                w.advance(now);
                match w {
                    Window::Time { totals, .. } => totals,
                    Window::Count { .. } => unreachable!("advance keeps the kind"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(calls: u64, failures: u64, slow: u64) -> Counts {
        Counts {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn a_block_spreads_its_failures_evenly() {
        let codes: Vec<u8> = (0..10).map(|i| block_code(i, 10, 5, 0)).collect();
        assert_eq!(codes, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        let all: u64 = (0..7).map(|i| u64::from(block_code(i, 7, 7, 7))).sum();
        assert_eq!(all, 21);
    }

    #[test]
    fn count_window_keeps_the_last_calls() {
        let mut w = Window::new(WindowKind::Count, 4);
        w.add(0, c(3, 3, 0));
        assert_eq!(w.totals(0), c(3, 3, 0));
        w.add(0, c(2, 0, 1));
        // the oldest failure left
        assert_eq!(w.totals(0), c(4, 2, 1));
        // a block larger than the window keeps its proportion
        w.add(0, c(100, 50, 0));
        assert_eq!(w.totals(0), c(4, 2, 0));
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let mut w = Window::new(WindowKind::Time, 3);
        w.advance(10 * SECOND);
        w.add(10 * SECOND, c(2, 1, 0));
        w.advance(11 * SECOND);
        w.add(11 * SECOND + 5, c(1, 1, 1));
        assert_eq!(w.totals(12 * SECOND), c(3, 2, 1));
        assert_eq!(w.totals(13 * SECOND), c(1, 1, 1));
        assert_eq!(w.totals(14 * SECOND), c(0, 0, 0));
        w.advance(13 * SECOND);
        assert_eq!(w.totals(13 * SECOND), c(1, 1, 1));
        w.advance(100 * SECOND);
        w.add(100 * SECOND, c(1, 0, 0));
        assert_eq!(w.totals(100 * SECOND), c(1, 0, 0));
    }
}
