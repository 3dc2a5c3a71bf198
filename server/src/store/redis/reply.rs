//! Parsing the scripts' replies. Acquire:
//! `{allowed, per check: allowed, limit, remaining, reset_after, retry_after, member,
//! per breaker: allowed, state, retry_after, generation, then transitions}`, or
//! `{'replay', record}` where the record is the same values (without transitions) joined by
//! commas; in `'reserve'` mode `{'reserved', now, ...}`. The breaker scripts' replies are
//! described in their files.
use floodgate_core::{
    CheckOutcome, Micros,
    breaker::{Admission, Counts, Info, ReportResult, State},
};
use redis::Value;

use crate::store::{BreakerRead, BreakerReported, MadeTransition, StoreDecision, StoreError};

fn bad(what: impl Into<String>) -> StoreError {
    StoreError::Protocol(what.into())
}

/// One reply element as text (integers and strings alike).
fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::Int(i) => Ok(i.to_string()),
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("non-UTF-8 reply")),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(bad(format!("unexpected element {other:?}"))),
    }
}

fn number(s: &str) -> Result<u64, StoreError> {
    // Values are non-negative integers; Lua may hand back "-0" or a float for 0.
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f > -1.0)
        .map(|f| f.max(0.0) as u64)
        .ok_or_else(|| bad(format!("not a number: {s:?}")))
}

fn state(s: &str) -> Result<State, StoreError> {
    State::from_name(s).ok_or_else(|| bad(format!("unknown breaker state {s:?}")))
}

/// The transitions tail every breaker-aware script ends with: a count, then breaker, from,
/// to and reason per transition. A replayed answer has none.
fn transitions(fields: &[String]) -> Result<Vec<MadeTransition>, StoreError> {
    let Some((count, rest)) = fields.split_first() else {
        return Ok(Vec::new());
    };
    let count = number(count)? as usize;
    if rest.len() != 4 * count {
        return Err(bad(format!(
            "expected {count} transitions, got {} values",
            rest.len()
        )));
    }
    rest.chunks_exact(4)
        .map(|t| {
            Ok(MadeTransition {
                breaker: t[0].clone(),
                from: state(&t[1])?,
                to: state(&t[2])?,
                reason: t[3].clone(),
            })
        })
        .collect()
}

fn decision(
    fields: &[String],
    checks: usize,
    breakers: usize,
) -> Result<StoreDecision, StoreError> {
    let head = 1 + 6 * checks + 4 * breakers;
    if fields.len() < head {
        return Err(bad(format!(
            "expected {head} values for {checks} checks and {breakers} breakers, got {}",
            fields.len()
        )));
    }
    let allowed = number(&fields[0])? == 1;
    let mut outcomes = Vec::with_capacity(checks);
    let mut leases = Vec::with_capacity(checks);
    for chunk in fields[1..1 + 6 * checks].chunks_exact(6) {
        outcomes.push(CheckOutcome {
            allowed: number(&chunk[0])? == 1,
            limit: number(&chunk[1])?,
            remaining: number(&chunk[2])?,
            reset_after: number(&chunk[3])?,
            retry_after: number(&chunk[4])?,
        });
        leases.push((!chunk[5].is_empty()).then(|| chunk[5].clone()));
    }
    let admissions = fields[1 + 6 * checks..head]
        .chunks_exact(4)
        .map(|b| {
            Ok(Admission {
                allowed: number(&b[0])? == 1,
                state: state(&b[1])?,
                retry_after: number(&b[2])?,
                generation: number(&b[3])?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(StoreDecision {
        allowed,
        checks: outcomes,
        leases,
        breakers: admissions,
        transitions: transitions(&fields[head..])?,
    })
}

fn fields(value: &Value) -> Result<Vec<String>, StoreError> {
    let Value::Array(items) = value else {
        return Err(bad(format!("expected an array, got {value:?}")));
    };
    items.iter().map(text).collect()
}

/// Parses the reply for a plan of `checks` checks and `breakers` breakers.
pub(super) fn parse_acquire(
    value: &Value,
    checks: usize,
    breakers: usize,
) -> Result<StoreDecision, StoreError> {
    let fields = fields(value)?;
    if fields.len() == 2 && fields[0] == "replay" {
        let record: Vec<String> = fields[1].split(',').map(str::to_owned).collect();
        return decision(&record, checks, breakers);
    }
    decision(&fields, checks, breakers)
}

/// Parses the reply of `acquire.lua` in `'reserve'` mode: `{'reserved', now, ...}` with
/// the Acquire reply after; returns the decision and the script's clock.
pub(super) fn parse_reserve(
    value: &Value,
    checks: usize,
    breakers: usize,
) -> Result<(StoreDecision, Micros), StoreError> {
    let fields = fields(value)?;
    match fields.split_first() {
        Some((tag, rest)) if tag == "reserved" && !rest.is_empty() => {
            Ok((decision(&rest[1..], checks, breakers)?, number(&rest[0])?))
        }
        _ => Err(bad(format!("expected a 'reserved' reply, got {fields:?}"))),
    }
}

/// Parses a request record (`acquire.lua`'s format, also written by the Cluster split
/// path): the reply's values without transitions, joined by commas.
pub(super) fn parse_record(
    record: &str,
    checks: usize,
    breakers: usize,
) -> Result<StoreDecision, StoreError> {
    let fields: Vec<String> = record.split(',').map(str::to_owned).collect();
    decision(&fields, checks, breakers)
}

/// Writes a decision as a request record (the inverse of [`parse_record`]).
pub(super) fn encode_record(d: &StoreDecision) -> String {
    let mut parts = vec![u8::from(d.allowed).to_string()];
    for (c, lease) in d.checks.iter().zip(&d.leases) {
        parts.extend([
            u8::from(c.allowed).to_string(),
            c.limit.to_string(),
            c.remaining.to_string(),
            c.reset_after.to_string(),
            c.retry_after.to_string(),
            lease.clone().unwrap_or_default(),
        ]);
    }
    for b in &d.breakers {
        parts.extend([
            u8::from(b.allowed).to_string(),
            b.state.name().to_owned(),
            b.retry_after.to_string(),
            b.generation.to_string(),
        ]);
    }
    parts.join(",")
}

/// Parses `breaker_report.lua`'s reply.
pub(super) fn parse_report(value: &Value) -> Result<BreakerReported, StoreError> {
    let f = fields(value)?;
    if f.len() < 3 {
        return Err(bad("short breaker report reply"));
    }
    Ok(BreakerReported {
        result: ReportResult {
            accepted: number(&f[0])? == 1,
            state: state(&f[1])?,
            generation: number(&f[2])?,
        },
        transitions: transitions(&f[3..])?,
    })
}

/// Parses `br_info`'s 10 values and the transitions tail (`breaker_get.lua`,
/// `breaker_set_state.lua`).
pub(super) fn parse_info(value: &Value) -> Result<BreakerRead, StoreError> {
    let f = fields(value)?;
    if f.len() < 10 {
        return Err(bad("short breaker info reply"));
    }
    let n = |i: usize| number(&f[i]);
    Ok(BreakerRead {
        info: Info {
            exists: n(0)? == 1,
            state: state(&f[1])?,
            generation: n(2)?,
            counts: Counts {
                calls: n(3)?,
                failures: n(4)?,
                slow: n(5)?,
            },
            retry_after: n(6)?,
            permits_in_flight: n(7)? as u32,
            opens: n(8)? as u32,
            failing_reporters: n(9)? as u32,
        },
        transitions: transitions(&f[10..])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_live_and_replayed_answers() {
        let live = Value::Array(vec![
            Value::Int(1),
            Value::Int(1),
            Value::Int(10),
            Value::Int(9),
            Value::Int(100),
            Value::Int(0),
            Value::BulkString(b"1~abc".to_vec()),
            Value::Int(0),
        ]);
        let d = parse_acquire(&live, 1, 0).unwrap();
        assert!(d.allowed);
        assert_eq!(d.checks[0].remaining, 9);
        assert_eq!(d.leases[0].as_deref(), Some("1~abc"));
        let replay = Value::Array(vec![
            Value::BulkString(b"replay".to_vec()),
            Value::BulkString(b"1,1,10,9,100,0,1~abc".to_vec()),
        ]);
        assert_eq!(parse_acquire(&replay, 1, 0).unwrap(), d);
    }

    #[test]
    fn parses_reserved_answers() {
        let v = Value::Array(vec![
            Value::BulkString(b"reserved".to_vec()),
            Value::Int(1_700_000_000_000_123),
            Value::Int(0),
            Value::Int(0),
            Value::Int(10),
            Value::Int(0),
            Value::Int(100),
            Value::Int(50),
            Value::BulkString(Vec::new()),
            Value::Int(0),
        ]);
        let (d, now) = parse_reserve(&v, 1, 0).unwrap();
        assert_eq!(now, 1_700_000_000_000_123);
        assert!(!d.allowed);
        assert_eq!(d.checks[0].retry_after, 50);
        assert!(parse_reserve(&Value::Array(vec![Value::Int(1)]), 0, 0).is_err());
        let plain = Value::Array(vec![Value::Int(1), Value::Int(0)]);
        assert!(parse_reserve(&plain, 0, 0).is_err());
    }

    #[test]
    fn rejects_short_replies() {
        assert!(parse_acquire(&Value::Array(vec![Value::Int(1)]), 1, 0).is_err());
    }
}
