//! Every Redis key floodgate uses, and nothing else formats one.
//!
//! All keys of one limit share the Cluster hash tag `{namespace:key}`, so every script
//! touches one slot: `fg:{ns:user:42}:tb:api`. Namespaces cannot contain `:`, `{` or `}`
//! and policy references cannot contain `:` or `}`, so a key string belongs to exactly one
//! (namespace, key, algorithm, policy) even when the user's key contains `:` or braces.
//! Envoy RLS limits use the policy reference `rls@<unit>` (`crate::rls::config::policy_ref`),
//! which no configured or inline policy can have.
use floodgate_core::Algorithm;

/// Builds keys under one configurable prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// First segment of every key (default `fg`).
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The state of one limit: `<prefix>:{<ns>:<key>}:<algorithm code>:<policy ref>`.
    pub fn limit(
        &self,
        namespace: &str,
        key: &str,
        algorithm: Algorithm,
        policy_ref: &str,
    ) -> String {
        format!(
            "{}:{{{}:{}}}:{}:{}",
            self.prefix,
            namespace,
            key,
            algorithm.code(),
            policy_ref
        )
    }

    /// The schema record of the key layout (`store::redis::schema`): `<prefix>:schema`,
    /// a hash without TTL. No limit key equals it: those continue `<prefix>:{`.
    pub fn schema(&self) -> String {
        format!("{}:schema", self.prefix)
    }

    /// The stored first answer of an Acquire with a `request_id`, under the hash tag of the
    /// request's first check: `<prefix>:{<ns>:<key>}:req:<request_id>:<fingerprint>`, where
    /// the fingerprint covers every check's state key and cost, so an id reused by a
    /// different Acquire never replays an answer that does not fit it. Request ids contain
    /// no `}` (validated), so this never equals a limit key of a key containing `}`.
    pub fn request(
        &self,
        namespace: &str,
        first_key: &str,
        request_id: &str,
        fingerprint: &str,
    ) -> String {
        format!(
            "{}:{{{}:{}}}:req:{}:{}",
            self.prefix, namespace, first_key, request_id, fingerprint
        )
    }

    /// The four keys of one breaker, under the hash tag `{<ns>:<breaker>}`: state
    /// `<prefix>:{<ns>:<name>}:br`, then its window `…:br:w`, failing reporters `…:br:r`
    /// and transition history `…:br:ev` (see `lua/breaker.lua`). A limit key has an
    /// algorithm code after the tag, never `br`, so the two kinds never meet.
    pub fn breaker(&self, namespace: &str, name: &str) -> [String; 4] {
        let state = format!("{}:{{{}:{}}}:br", self.prefix, namespace, name);
        let (w, r, e) = (
            format!("{state}:w"),
            format!("{state}:r"),
            format!("{state}:ev"),
        );
        [state, w, r, e]
    }

    /// The set of breaker names that have state in `namespace` (for List):
    /// `<prefix>:breakers:{<ns>}`.
    pub fn breaker_index(&self, namespace: &str) -> String {
        format!("{}:breakers:{{{}}}", self.prefix, namespace)
    }

    /// One minute's top denied keys of `namespace` (a sorted set; `crate::top`):
    /// `<prefix>:top:{<ns>}:<minute since the epoch>`.
    pub fn top(&self, namespace: &str, minute: u64) -> String {
        format!("{}:top:{{{}}}:{}", self.prefix, namespace, minute)
    }

    /// The eight keys of one dead-letter queue (see `lua/dlq.lua`), under the hash tag
    /// `{<ns>:<queue>}`: `<prefix>:{<ns>:<queue>}:dlq` (the stream), then `…:dlq:p`,
    /// `…:dlq:a`, `…:dlq:ap`, `…:dlq:h`, `…:dlq:v`, `…:dlq:d`, `…:dlq:m`. Idempotency
    /// records are `<stream key>:ik:<idempotency key>` (built by the Redis store).
    pub fn queue(&self, namespace: &str, queue: &str) -> [String; 8] {
        let s = format!("{}:{{{}:{}}}:dlq", self.prefix, namespace, queue);
        let k = |suffix: &str| format!("{s}:{suffix}");
        [
            s.clone(),
            k("p"),
            k("a"),
            k("ap"),
            k("h"),
            k("v"),
            k("d"),
            k("m"),
        ]
    }

    /// A queue's redrive in-flight hash (entry id -> target): `…:dlq:rd`.
    pub fn queue_redrive(&self, namespace: &str, queue: &str) -> String {
        format!("{}:{{{}:{}}}:dlq:rd", self.prefix, namespace, queue)
    }

    /// The set of `<ns>\t<queue>` with state (for metrics and status): `<prefix>:queues`.
    pub fn queue_index(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The Pub/Sub channel every breaker transition is published on.
    pub fn breaker_channel(&self) -> String {
        format!("{}:breaker-events", self.prefix)
    }

    /// The request rate of bearer token `name` (`crate::auth`): a limit in the reserved
    /// namespace `floodgate` whose policy reference `auth@rate` no configured or inline
    /// policy can have: `<prefix>:{floodgate:token/<name>}:<algorithm>:auth@rate`.
    pub fn token_rate(&self, name: &str, algorithm: Algorithm) -> String {
        self.limit(
            "floodgate",
            &format!("token/{name}"),
            algorithm,
            TOKEN_RATE_POLICY,
        )
    }

    /// The first segment of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The audit trail (`crate::audit`): `<prefix>:audit`, a capped stream without TTL.
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }
}

/// The policy reference of token request rates (see [`Keys::token_rate`]).
pub const TOKEN_RATE_POLICY: &str = "auth@rate";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_limit_hash_tag() {
        let k = Keys::new("fg");
        assert_eq!(
            k.limit("ns", "user:42", Algorithm::TokenBucket, "api"),
            "fg:{ns:user:42}:tb:api"
        );
        assert_eq!(
            k.request("ns", "user:42", "r1", "00ff"),
            "fg:{ns:user:42}:req:r1:00ff"
        );
        assert_eq!(Keys::new("acme").schema(), "acme:schema");
    }

    #[test]
    fn different_periods_never_share_state() {
        let k = Keys::new("fg");
        assert_ne!(
            k.limit("ns", "a", Algorithm::FixedWindow, "per-second"),
            k.limit("ns", "a", Algorithm::FixedWindow, "per-hour")
        );
    }
}
