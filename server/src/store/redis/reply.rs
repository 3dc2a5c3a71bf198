//! Parsing the Acquire script's reply:
//! `{allowed, per check: allowed, limit, remaining, reset_after, retry_after, member}`,
//! or `{'replay', record}` where the record is the same values joined by commas.
use floodgate_core::CheckOutcome;
use redis::Value;

use crate::store::{StoreDecision, StoreError};

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

fn decision(fields: &[String], checks: usize) -> Result<StoreDecision, StoreError> {
    if fields.len() != 1 + 6 * checks {
        return Err(bad(format!(
            "expected {} values for {checks} checks, got {}",
            1 + 6 * checks,
            fields.len()
        )));
    }
    let allowed = number(&fields[0])? == 1;
    let mut outcomes = Vec::with_capacity(checks);
    let mut leases = Vec::with_capacity(checks);
    for chunk in fields[1..].chunks_exact(6) {
        outcomes.push(CheckOutcome {
            allowed: number(&chunk[0])? == 1,
            limit: number(&chunk[1])?,
            remaining: number(&chunk[2])?,
            reset_after: number(&chunk[3])?,
            retry_after: number(&chunk[4])?,
        });
        leases.push((!chunk[5].is_empty()).then(|| chunk[5].clone()));
    }
    Ok(StoreDecision {
        allowed,
        checks: outcomes,
        leases,
    })
}

/// Parses the reply for a plan of `checks` checks.
pub(super) fn parse_acquire(value: &Value, checks: usize) -> Result<StoreDecision, StoreError> {
    let Value::Array(items) = value else {
        return Err(bad(format!("expected an array, got {value:?}")));
    };
    if items.len() == 2 && text(&items[0])? == "replay" {
        let record = text(&items[1])?;
        let fields: Vec<String> = record.split(',').map(str::to_owned).collect();
        return decision(&fields, checks);
    }
    let fields = items.iter().map(text).collect::<Result<Vec<_>, _>>()?;
    decision(&fields, checks)
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
        ]);
        let d = parse_acquire(&live, 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.checks[0].remaining, 9);
        assert_eq!(d.leases[0].as_deref(), Some("1~abc"));
        let replay = Value::Array(vec![
            Value::BulkString(b"replay".to_vec()),
            Value::BulkString(b"1,1,10,9,100,0,1~abc".to_vec()),
        ]);
        assert_eq!(parse_acquire(&replay, 1).unwrap(), d);
    }

    #[test]
    fn rejects_short_replies() {
        assert!(parse_acquire(&Value::Array(vec![Value::Int(1)]), 1).is_err());
    }
}
