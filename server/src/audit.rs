//! The audit trail: every operator and admin action (SetState, ResetLimit, Claim, Redrive,
//! Archive, Restore, Purge, configuration reloads) and every refused attempt at one is
//! logged (target `floodgate::audit`) and appended to a bounded stream in the store
//! (Redis `XADD <prefix>:audit MAXLEN ~ 10000`; the memory store keeps a ring of as many).
//! `floodgate audit` and the Admin `AuditLog` RPC read it.
use std::time::{SystemTime, UNIX_EPOCH};

use floodgate_proto::v1 as pb;
use tonic::Code;
use tracing::{info, warn};

use crate::{
    auth::Role,
    service::state::AppState,
    store::{AuditRecord, Store},
};

/// About how many entries the stream keeps.
pub const AUDIT_MAX_LEN: usize = 10_000;

/// One action, or a refused attempt at one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// The token's name (`anonymous` with auth off, `unauthenticated` without a token).
    pub caller: String,
    /// The token's role, when known.
    pub role: String,
    /// The RPC (or `ConfigReload`).
    pub rpc: String,
    /// The namespaces the call named, comma-separated.
    pub namespace: String,
    /// `Ok` or the gRPC code's name.
    pub outcome: String,
    /// The failure's message.
    pub detail: String,
}

impl Entry {
    /// An entry stamped now.
    pub fn new(
        caller: &str,
        role: Option<Role>,
        rpc: &str,
        namespace: &str,
        code: Code,
        detail: &str,
    ) -> Self {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            at_unix_ms,
            caller: caller.to_owned(),
            role: role.map(Role::name).unwrap_or_default().to_owned(),
            rpc: rpc.to_owned(),
            namespace: namespace.to_owned(),
            outcome: crate::metrics::code_name(code).to_owned(),
            detail: detail.chars().take(500).collect(),
        }
    }

    fn fields(&self) -> [(&'static str, String); 7] {
        [
            ("at", self.at_unix_ms.to_string()),
            ("caller", self.caller.clone()),
            ("role", self.role.clone()),
            ("rpc", self.rpc.clone()),
            ("namespace", self.namespace.clone()),
            ("outcome", self.outcome.clone()),
            ("detail", self.detail.clone()),
        ]
    }

    /// The entry on the wire, with its stream id.
    pub fn to_wire(&self, id: String) -> pb::AuditEntry {
        pb::AuditEntry {
            id,
            at_unix_ms: self.at_unix_ms,
            caller: self.caller.clone(),
            role: self.role.clone(),
            rpc: self.rpc.clone(),
            namespace: self.namespace.clone(),
            outcome: self.outcome.clone(),
            detail: self.detail.clone(),
        }
    }

    /// An entry read back from the store (unknown fields ignored, missing ones empty).
    pub fn from_record(fields: &[(String, String)]) -> Self {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Self {
            at_unix_ms: get("at").parse().unwrap_or(0),
            caller: get("caller"),
            role: get("role"),
            rpc: get("rpc"),
            namespace: get("namespace"),
            outcome: get("outcome"),
            detail: get("detail"),
        }
    }
}

/// Logs `entry` (target `floodgate::audit`) without storing it.
pub fn log(entry: &Entry) {
    info!(
        target: "floodgate::audit",
        caller = %entry.caller,
        role = %entry.role,
        rpc = %entry.rpc,
        namespace = %entry.namespace,
        outcome = %entry.outcome,
        detail = %entry.detail,
        "audit"
    );
}

/// Logs `entry` and appends it to the store's audit stream; a failing store is logged and
/// counted (`floodgate_audit_write_failures_total`), never the caller's error.
pub async fn record<S: Store>(state: &AppState<S>, entry: Entry) {
    log(&entry);
    let key = state.keys.audit();
    let fields = entry.fields();
    if let Err(e) = state
        .timed(
            "audit_append",
            state.store.audit_append(&key, &fields, AUDIT_MAX_LEN),
        )
        .await
    {
        crate::metrics::audit_write_failed();
        warn!(error = %e, "could not append the audit entry to the store");
    }
}

/// The newest `count` entries, newest first.
pub async fn read<S: Store>(
    state: &AppState<S>,
    count: usize,
) -> Result<Vec<(String, Entry)>, crate::error::Error> {
    let key = state.keys.audit();
    let records: Vec<AuditRecord> = state
        .with_deadline("audit_read", state.store.audit_read(&key, count))
        .await?;
    Ok(records
        .into_iter()
        .map(|(id, f)| (id, Entry::from_record(&f)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn the_memory_ring_is_bounded_and_reads_newest_first() {
        let store = MemoryStore::default();
        for i in 0..5 {
            let e = Entry::new("t", Some(Role::Admin), "Purge", "ns", Code::Ok, "");
            let mut fields = e.fields();
            fields[6].1 = i.to_string();
            store.audit_append("k", &fields, 3).await.unwrap();
        }
        let read = store.audit_read("k", 10).await.unwrap();
        let details: Vec<String> = read
            .iter()
            .map(|(_, f)| Entry::from_record(f).detail)
            .collect();
        assert_eq!(details, ["4", "3", "2"]);
        let e = Entry::from_record(&read[0].1);
        assert_eq!(
            (e.caller.as_str(), e.role.as_str(), e.outcome.as_str()),
            ("t", "admin", "Ok")
        );
    }
}
