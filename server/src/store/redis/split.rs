//! Redis Cluster: an Acquire whose keys live in more than one hash slot.
//!
//! One script can only touch one slot, so such an Acquire is decided slot by slot (DESIGN
//! "Rate-limit algorithms"): each slot's checks and breakers are *reserved* by one
//! `acquire.lua` call in `reserve` mode (decided and consumed there, all-or-nothing within
//! the slot); when a later slot denies, every slot reserved so far is refunded
//! (`refund.lua`, and breaker trial permits are handed back). So the fleet never admits
//! more than a limit allows; while a reservation waits for its refund, other callers may
//! see the units as taken (a brief under-admission, bounded by one round trip per slot).
//!
//! Slots holding breakers go first (an OPEN breaker then denies before any limit is
//! touched). A denied answer reports every other check as its limit is after the refunds
//! (a fresh Status per slot). A `request_id` record is read before and written after the
//! whole decision, in the first check's slot; two concurrent retries of the same id may
//! both decide (each then consumes once), which a single-slot Acquire never does.
use floodgate_core::{Micros, breaker::State};
use futures::future::join_all;
use tracing::warn;

use super::{RedisStore, reply};
use crate::store::{AcquirePlan, ReportCounts, StoreDecision, StoreError};

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}` when non-empty), modulo 16384 — as Redis Cluster computes it.
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The checks and breakers (indices into the plan) of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Group {
    slot: u16,
    checks: Vec<usize>,
    breakers: Vec<usize>,
}

/// The plan's keys grouped by slot: groups of breakers alone first, then groups with
/// breakers and checks, then the rest, in check order. One group means the plan runs as one
/// script.
pub(super) fn groups(plan: &AcquirePlan) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut find = |slot: u16| -> usize {
        match groups.iter().position(|g| g.slot == slot) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    slot,
                    ..Group::default()
                });
                groups.len() - 1
            }
        }
    };
    let check_slots: Vec<u16> = plan.checks.iter().map(|c| hash_slot(&c.key)).collect();
    let breaker_slots: Vec<u16> = plan
        .breakers
        .iter()
        .map(|b| hash_slot(&b.keys[0]))
        .collect();
    let check_groups: Vec<usize> = check_slots.iter().map(|&s| find(s)).collect();
    let breaker_groups: Vec<usize> = breaker_slots.iter().map(|&s| find(s)).collect();
    // The request record lives in the first check's slot; a plan whose only other keys are
    // there is still one group.
    for (i, g) in check_groups.into_iter().enumerate() {
        groups[g].checks.push(i);
    }
    for (j, g) in breaker_groups.into_iter().enumerate() {
        groups[g].breakers.push(j);
    }
    // Breaker-only groups first (an OPEN breaker denies before any limit is touched), then
    // groups with breakers and checks, then checks only; stable, so in check order within.
    groups.sort_by_key(|g| match (g.breakers.is_empty(), g.checks.is_empty()) {
        (false, true) => 0,
        (false, false) => 1,
        (true, _) => 2,
    });
    groups
}

/// The part of `plan` in group `g` (no request record: the split path keeps it).
fn sub_plan(plan: &AcquirePlan, g: &Group, consume: bool) -> AcquirePlan {
    AcquirePlan {
        checks: g.checks.iter().map(|&i| plan.checks[i].clone()).collect(),
        request_record: None,
        breakers: g
            .breakers
            .iter()
            .map(|&j| plan.breakers[j].clone())
            .collect(),
        consume,
        now: plan.now,
    }
}

/// The whole plan's decision, filled group by group.
struct Merged(StoreDecision);

impl Merged {
    fn new(plan: &AcquirePlan) -> Self {
        Self(StoreDecision {
            allowed: true,
            checks: vec![Default::default(); plan.checks.len()],
            leases: vec![None; plan.checks.len()],
            breakers: vec![
                floodgate_core::breaker::Admission {
                    allowed: true,
                    state: State::Closed,
                    retry_after: 0,
                    generation: 0,
                };
                plan.breakers.len()
            ],
            transitions: Vec::new(),
        })
    }

    fn add(&mut self, g: &Group, d: StoreDecision) {
        self.0.allowed &= d.allowed;
        for (k, &i) in g.checks.iter().enumerate() {
            self.0.checks[i] = d.checks[k];
            self.0.leases[i] = d.leases[k].clone();
        }
        for (k, &j) in g.breakers.iter().enumerate() {
            self.0.breakers[j] = d.breakers[k];
        }
        self.0.transitions.extend(d.transitions);
    }
}

impl RedisStore {
    /// Decides a plan whose keys span several slots (see the module doc).
    pub(super) async fn acquire_split(
        &self,
        plan: &AcquirePlan,
        groups: &[Group],
    ) -> Result<StoreDecision, StoreError> {
        let mut merged = Merged::new(plan);
        if !plan.consume {
            for g in groups {
                merged.add(g, self.acquire_one(&sub_plan(plan, g, false)).await?);
            }
            return Ok(merged.0);
        }
        if let Some(record) = &plan.request_record {
            let stored: Option<String> = self.command(redis::cmd("GET").arg(record)).await?;
            if let Some(stored) = stored {
                return reply::parse_record(&stored, plan.checks.len(), plan.breakers.len());
            }
        }
        let mut reserved: Vec<(&Group, StoreDecision, Micros)> = Vec::new();
        for (at, g) in groups.iter().enumerate() {
            let (d, now) = match self.reserve(&sub_plan(plan, g, true)).await {
                Ok(r) => r,
                Err(e) => {
                    // This slot's reservation may or may not have happened: it is left as
                    // is (at worst units held until their window passes: under-admission).
                    self.refund_groups(plan, &reserved).await;
                    return Err(e);
                }
            };
            if d.allowed {
                reserved.push((g, d, now));
                continue;
            }
            self.refund_groups(plan, &reserved).await;
            merged.add(g, d);
            // Every other slot reports its limits as they are now (all at once: the denial
            // path is the longest, and runs most when limits are exhausted).
            let others: Vec<&Group> = groups
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != at)
                .map(|(_, other)| other)
                .collect();
            let subs: Vec<AcquirePlan> = others
                .iter()
                .map(|other| sub_plan(plan, other, false))
                .collect();
            let peeks = join_all(subs.iter().map(|sub| self.acquire_one(sub))).await;
            for (other, peek) in others.into_iter().zip(peeks) {
                match peek {
                    Ok(mut peek) => {
                        peek.allowed = false;
                        merged.add(other, peek);
                    }
                    Err(e) => warn!(error = %e, "status of a refunded slot failed"),
                }
            }
            merged.0.allowed = false;
            merged.0.leases.iter_mut().for_each(|l| *l = None);
            return Ok(merged.0);
        }
        for (g, d, _) in reserved {
            merged.add(g, d);
        }
        if let Some(record) = &plan.request_record {
            let text = reply::encode_record(&merged.0);
            let written: Result<(), StoreError> = self
                .command(
                    redis::cmd("SET")
                        .arg(record)
                        .arg(text)
                        .arg("PX")
                        .arg(super::REQUEST_RECORD_TTL_MS),
                )
                .await;
            if let Err(e) = written {
                warn!(error = %e, "could not record the answer of an admitted Acquire");
            }
        }
        Ok(merged.0)
    }

    /// Gives back what `reserved` took: the units of each admitted check and the trial
    /// permit of each breaker admitted in HALF_OPEN. Failures are logged and counted; what
    /// could not be given back stays taken until its window passes (under-admission, never
    /// over-admission).
    async fn refund_groups(
        &self,
        plan: &AcquirePlan,
        reserved: &[(&Group, StoreDecision, Micros)],
    ) {
        // One slot's refund and permit hand-back after the other; the slots all at once.
        join_all(reserved.iter().map(|(g, d, consumed_at)| async move {
            let checks: Vec<_> = g.checks.iter().map(|&i| plan.checks[i].clone()).collect();
            let mut failed = false;
            if !checks.is_empty()
                && let Err(e) = self
                    .refund(&checks, &d.checks, *consumed_at, plan.now)
                    .await
            {
                warn!(error = %e, "could not refund a reserved slot; its units stay taken until they expire");
                failed = true;
            }
            for (k, &j) in g.breakers.iter().enumerate() {
                let admission = d.breakers[k];
                if admission.state != State::HalfOpen || !admission.allowed {
                    continue;
                }
                let release = ReportCounts {
                    counts: Default::default(),
                    released: 1,
                    generation: admission.generation,
                    reporter: String::new(),
                };
                let b = &plan.breakers[j];
                if let Err(e) =
                    crate::store::Store::breaker_report(self, b, &release, 0, plan.now).await
                {
                    warn!(error = %e, breaker = %b.name, "could not hand back a trial permit; it expires by itself");
                    failed = true;
                }
            }
            crate::metrics::cluster_refund(!failed);
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("bar"), 5061);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("fg:{ns:k}:tb:api"), hash_slot("ns:k"));
        // an empty tag hashes the whole key
        assert_eq!(hash_slot("a{}b"), crc16(b"a{}b") % 16384);
        assert_eq!(hash_slot("a{b"), crc16(b"a{b") % 16384);
    }
}
