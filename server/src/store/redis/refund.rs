//! Redis Cluster's split Acquire: reserve one slot's checks (`acquire.lua` in `'reserve'`
//! mode, which also answers the script's clock), and refund what an admitted reservation
//! consumed when a later slot denies (`lua/refund.lua`, twin of `core::refund`).
use floodgate_core::{CheckOutcome, Micros};

use super::{RedisStore, acquire_invocation, now_arg, policy_args, reply, scripts};
use crate::store::{AcquirePlan, PlannedCheck, StoreDecision, StoreError};

impl RedisStore {
    /// Decides and consumes `plan` exactly as an Acquire does (its request record is never
    /// read or written); returns the decision and the script's `now`, which a
    /// [`refund`](Self::refund) of this reservation needs as `consumed_at`.
    pub async fn reserve(&self, plan: &AcquirePlan) -> Result<(StoreDecision, Micros), StoreError> {
        let inv = acquire_invocation(&scripts::ACQUIRE, plan, "reserve");
        let value: redis::Value = self.invoke(&inv).await?;
        reply::parse_reserve(&value, plan.checks.len(), plan.breakers.len())
    }

    /// Gives back what an admitted reservation consumed at `consumed_at`: every check whose
    /// outcome allowed (shadow ones included; a denied check consumed nothing), in one call
    /// of `lua/refund.lua`, so all keys must share one slot. `now` is the explicit test
    /// clock (`None`: Redis `TIME`). Breaker permits the reservation took are not given
    /// back. A no-op when nothing allowed.
    pub async fn refund(
        &self,
        checks: &[PlannedCheck],
        outcomes: &[CheckOutcome],
        consumed_at: Micros,
        now: Option<Micros>,
    ) -> Result<(), StoreError> {
        if checks.len() != outcomes.len() {
            return Err(StoreError::Protocol(format!(
                "refund of {} checks with {} outcomes",
                checks.len(),
                outcomes.len()
            )));
        }
        let taken: Vec<(&PlannedCheck, &CheckOutcome)> = checks
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| o.allowed)
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let mut inv = scripts::REFUND.prepare_invoke();
        for (c, _) in &taken {
            inv.key(c.key.as_str());
        }
        inv.arg(now_arg(now)).arg(consumed_at).arg(taken.len());
        for (c, o) in &taken {
            inv.arg(c.policy.algorithm().code())
                .arg(c.cost)
                .arg(o.reset_after);
            policy_args(&mut inv, c);
        }
        let _changed: i64 = self.invoke(&inv).await?;
        Ok(())
    }
}
