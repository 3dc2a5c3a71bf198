//! The role each RPC needs, by its gRPC path, and which RPCs leave an audit entry.
//! README "Security" has the same table for people; change both together.
use super::Role;

/// What the layer does with one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (`Health/Check`, so load balancers need none).
    Open,
    /// A token of at least this role.
    Role(Role),
}

/// The access rule of the RPC at `path` (`/package.Service/Method`) and whether it is an
/// operator or admin action that is audited.
pub fn access(path: &str) -> (Access, bool) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    use Role::*;
    let (role, audited) = match (service, method) {
        // Load balancers probe with Check and need no token; Watch is a stream that never
        // ends, so it takes a token like any other stream.
        ("grpc.health.v1.Health", "Check") => return (Access::Open, false),
        ("grpc.health.v1.Health", _) => (App, false),
        ("floodgate.v1.RateLimiter", _) => (App, false),
        ("envoy.service.ratelimit.v3.RateLimitService", _) => (App, false),
        ("floodgate.v1.CircuitBreakers", "SetState") => (Operator, true),
        // Report, Get, List, Watch; History is a read of the same breaker.
        ("floodgate.v1.CircuitBreakers", _) => (App, false),
        ("floodgate.v1.DeadLetters", "Publish") => (App, false),
        ("floodgate.v1.DeadLetters", "Claim") => (Worker, true),
        ("floodgate.v1.DeadLetters", "Get" | "List" | "Stats" | "Ack" | "Nack") => (Worker, false),
        ("floodgate.v1.DeadLetters", "Redrive" | "Archive" | "Restore") => (Operator, true),
        ("floodgate.v1.DeadLetters", "Purge") => (Admin, true),
        // Clearing a limit is an override, like SetState.
        ("floodgate.v1.Admin", "ResetLimit") => (Operator, true),
        ("floodgate.v1.Admin", _) => (Operator, false),
        // Reflection and anything unknown: any valid token (unknown methods then get
        // UNIMPLEMENTED from the router, never a hint to the unauthenticated).
        _ => (App, false),
    };
    (Access::Role(role), audited)
}

/// The short RPC name of `path` (its method), for logs and audit entries.
pub fn method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let r = |p: &str| access(p).0;
        assert_eq!(r("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(r("/grpc.health.v1.Health/Watch"), Access::Role(Role::App));
        assert_eq!(
            r("/floodgate.v1.RateLimiter/Acquire"),
            Access::Role(Role::App)
        );
        assert_eq!(
            r("/floodgate.v1.DeadLetters/Claim"),
            Access::Role(Role::Worker)
        );
        assert_eq!(
            r("/floodgate.v1.DeadLetters/Purge"),
            Access::Role(Role::Admin)
        );
        assert_eq!(
            r("/floodgate.v1.Admin/ServerStatus"),
            Access::Role(Role::Operator)
        );
        assert!(access("/floodgate.v1.CircuitBreakers/SetState").1);
        assert!(!access("/floodgate.v1.CircuitBreakers/Get").1);
        assert_eq!(method("/floodgate.v1.Admin/TopKeys"), "TopKeys");
    }
}
