//! End to end: bearer tokens, roles and namespace grants (README "Security"), the per-token
//! rate and the audit trail, on real servers over a real socket, through the client crate,
//! on one Redis and on the memory store.
use floodgate_client::{
    Client,
    proto::{
        envoy::service::ratelimit::v3::{
            RateLimitRequest, rate_limit_service_client::RateLimitServiceClient,
        },
        v1::{self as pb, dead_letters_client::DeadLettersClient},
    },
};
use floodgate_tests::{
    e2e_support::{Fleet, TestToken, token_tables},
    on_both_stores,
};
use tonic::{Code, Status};

/// The tokens of [`config`]: (name, token, namespaces, role, extra lines).
const TOKENS: &[TestToken<'static>] = &[
    ("app-a", "fgt_app_a", r#"["team-a"]"#, "app", ""),
    ("worker-a", "fgt_worker_a", r#"["team-a"]"#, "worker", ""),
    (
        "operator-a",
        "fgt_operator_a",
        r#"["team-a"]"#,
        "operator",
        "",
    ),
    ("admin-a", "fgt_admin_a", r#"["team-a"]"#, "admin", ""),
    ("prefix-b", "fgt_prefix_b", r#"["team-b.*"]"#, "app", ""),
    ("root", "fgt_root", r#"["*"]"#, "operator", ""),
    (
        "expired",
        "fgt_expired",
        r#"["team-a"]"#,
        "admin",
        "expires = \"2020-01-01T00:00:00Z\"",
    ),
    (
        "flood",
        "fgt_flood",
        r#"["team-a"]"#,
        "app",
        "rate = \"5/h\"",
    ),
    (
        "calm",
        "fgt_calm",
        r#"["team-a"]"#,
        "app",
        "rate = \"1000/s\"",
    ),
];

fn config() -> String {
    let mut c = String::from(
        r#"
[policies.api]
algorithm = "token_bucket"
limit = 1000
period = "1s"

[breakers.pay]
minimum_calls = 5

[queues.orders]
"#,
    );
    c.push_str(&token_tables(TOKENS));
    c
}

async fn client(url: &str, token: Option<&str>) -> Client {
    let c = Client::connect(url).await.expect("connect");
    match token {
        Some(t) => c.with_token(t).expect("token"),
        None => c,
    }
}

/// Every RPC with the lowest role that may call it.
const RPCS: &[(&str, &str)] = &[
    ("Acquire", "app"),
    ("Release", "app"),
    ("Renew", "app"),
    ("Status", "app"),
    ("ShouldRateLimit", "app"),
    ("Report", "app"),
    ("GetBreaker", "app"),
    ("ListBreakers", "app"),
    ("Watch", "app"),
    ("History", "app"),
    ("Publish", "app"),
    ("SetState", "operator"),
    ("GetDeadLetter", "worker"),
    ("ListDeadLetters", "worker"),
    ("Stats", "worker"),
    ("Claim", "worker"),
    ("Ack", "worker"),
    ("Nack", "worker"),
    ("Redrive", "operator"),
    ("Archive", "operator"),
    ("Restore", "operator"),
    ("ResetLimit", "operator"),
    ("ServerStatus", "operator"),
    ("TopKeys", "operator"),
    ("AuditLog", "operator"),
    ("Purge", "admin"),
];

const ROLES: &[&str] = &["app", "worker", "operator", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("role")
}

/// Calls `rpc` in namespace `ns`; only the status matters.
async fn call(c: &Client, rpc: &str, ns: &str) -> Result<(), Status> {
    let ns = ns.to_owned();
    let q = "orders".to_owned();
    let mut dl = DeadLettersClient::new(c.transport().clone());
    let check = pb::LimitCheck {
        key: "k".into(),
        cost: 1,
        policy: Some(pb::limit_check::Policy::PolicyName("api".into())),
    };
    // A dead-letter RPC in `ns`'s queue `q` with the rest of its request left default.
    macro_rules! dl {
        ($method:ident, $request:ident) => {
            dl.$method(pb::$request {
                namespace: ns,
                queue: q,
                ..Default::default()
            })
            .await
            .map(drop)
        };
    }
    match rpc {
        "Acquire" => c
            .rate_limiter()
            .acquire(pb::AcquireRequest {
                namespace: ns,
                checks: vec![check],
                ..Default::default()
            })
            .await
            .map(drop),
        "Release" => c
            .rate_limiter()
            .release(pb::ReleaseRequest {
                namespace: ns,
                key: "k".into(),
                lease_id: "x".into(),
            })
            .await
            .map(drop),
        "Renew" => c
            .rate_limiter()
            .renew(pb::RenewRequest {
                namespace: ns,
                key: "k".into(),
                lease_id: "x".into(),
                ttl: None,
            })
            .await
            .map(drop),
        "Status" => c
            .rate_limiter()
            .status(pb::StatusRequest {
                namespace: ns,
                check: Some(check),
            })
            .await
            .map(drop),
        "ShouldRateLimit" => RateLimitServiceClient::new(c.transport().clone())
            .should_rate_limit(RateLimitRequest {
                domain: ns,
                ..Default::default()
            })
            .await
            .map(drop),
        "Report" => c
            .circuit_breakers()
            .report(pb::ReportRequest {
                namespace: ns,
                reports: vec![],
            })
            .await
            .map(drop),
        "GetBreaker" => c
            .circuit_breakers()
            .get(pb::GetBreakerRequest {
                namespace: ns,
                breaker: "pay".into(),
            })
            .await
            .map(drop),
        "ListBreakers" => c
            .circuit_breakers()
            .list(pb::ListBreakersRequest { namespace: ns })
            .await
            .map(drop),
        "Watch" => c
            .circuit_breakers()
            .watch(pb::WatchBreakersRequest {
                namespace: ns,
                breakers: vec![],
            })
            .await
            .map(drop),
        "History" => c
            .circuit_breakers()
            .history(pb::BreakerHistoryRequest {
                namespace: ns,
                breaker: "pay".into(),
                limit: 1,
            })
            .await
            .map(drop),
        "SetState" => c
            .circuit_breakers()
            .set_state(pb::SetBreakerStateRequest {
                namespace: ns,
                breaker: "pay".into(),
                state: pb::BreakerState::Closed as i32,
            })
            .await
            .map(drop),
        "Publish" => dl
            .publish(pb::PublishRequest {
                namespace: ns,
                queue: q,
                payload: b"x".to_vec(),
                reason: "test".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetDeadLetter" => dl
            .get(pb::GetDeadLetterRequest {
                namespace: ns,
                queue: q,
                id: "1-0".into(),
            })
            .await
            .map(drop),
        "ListDeadLetters" => dl!(list, ListDeadLettersRequest),
        "Stats" => dl
            .stats(pb::StatsRequest {
                namespace: ns,
                queue: q,
            })
            .await
            .map(drop),
        "Claim" => dl!(claim, ClaimRequest),
        "Ack" => dl!(ack, AckRequest),
        "Nack" => dl!(nack, NackRequest),
        "Redrive" => dl!(redrive, RedriveRequest),
        "Archive" => dl!(archive, ArchiveRequest),
        "Restore" => dl!(restore, RestoreRequest),
        "Purge" => dl!(purge, PurgeRequest),
        "ResetLimit" => c
            .admin()
            .reset_limit(pb::ResetLimitRequest {
                namespace: ns,
                check: Some(check),
            })
            .await
            .map(drop),
        "ServerStatus" => c
            .admin()
            .server_status(pb::ServerStatusRequest { namespace: ns })
            .await
            .map(drop),
        "TopKeys" => c
            .admin()
            .top_keys(pb::TopKeysRequest {
                namespace: ns,
                ..Default::default()
            })
            .await
            .map(drop),
        "AuditLog" => c
            .admin()
            .audit_log(pb::AuditLogRequest { limit: 10 })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

fn refused(r: &Result<(), Status>) -> bool {
    matches!(r, Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated))
}

/// Each role against each RPC in its own namespace: allowed exactly when the role is at
/// least the RPC's; a refusal names the RPC, the needed role and the token.
async fn each_role_against_each_rpc(urls: &[String]) {
    let url = &urls[0];
    for role in ROLES {
        let (name, token, ..) = TOKENS
            .iter()
            .find(|t| t.3 == *role && t.2 == r#"["team-a"]"# && t.4.is_empty())
            .expect("token of role");
        let c = client(url, Some(token)).await;
        for (rpc, need) in RPCS {
            let r = call(&c, rpc, "team-a").await;
            if rank(role) >= rank(need) {
                assert!(!refused(&r), "{role} may call {rpc}: {r:?}");
            } else {
                let s = r.expect_err(&format!("{role} must not call {rpc}"));
                assert_eq!(s.code(), Code::PermissionDenied, "{role} {rpc}: {s:?}");
                assert!(
                    s.message().contains(&format!("needs the {need} role"))
                        && s.message().contains(name),
                    "{role} {rpc}: {}",
                    s.message()
                );
            }
        }
    }
}

/// A token for team-a reaches nothing of team-b, in any RPC that names a namespace; the
/// refusal names the namespace and the token.
async fn team_a_cannot_touch_team_b(urls: &[String]) {
    let c = client(&urls[0], Some("fgt_admin_a")).await;
    for (rpc, _) in RPCS {
        if *rpc == "AuditLog" {
            continue;
        }
        let s = call(&c, rpc, "team-b")
            .await
            .expect_err(&format!("{rpc} on team-b must be refused"));
        assert_eq!(s.code(), Code::PermissionDenied, "{rpc}: {s:?}");
        assert!(
            s.message().contains("\"team-b\"") && s.message().contains("admin-a"),
            "{rpc}: {}",
            s.message()
        );
    }
    // Server-wide views (no namespace) need a `*` grant.
    let s = call(&c, "ServerStatus", "").await.expect_err("server-wide");
    assert_eq!(s.code(), Code::PermissionDenied);
    let root = client(&urls[0], Some("fgt_root")).await;
    call(&root, "ServerStatus", "")
        .await
        .expect("root sees all");
}

/// `team-b.*` covers `team-b.x` and `team-b.y.z`, not `team-b` itself nor `team-bb.x`.
async fn prefix_grant(urls: &[String]) {
    let c = client(&urls[0], Some("fgt_prefix_b")).await;
    for ns in ["team-b.x", "team-b.y.z"] {
        let r = call(&c, "Acquire", ns).await;
        assert!(!refused(&r), "{ns}: {r:?}");
    }
    for ns in ["team-b", "team-bb.x", "team-a"] {
        let s = call(&c, "Acquire", ns).await.expect_err(ns);
        assert_eq!(s.code(), Code::PermissionDenied, "{ns}");
    }
}

/// Missing, unknown, expired and malformed tokens are UNAUTHENTICATED with the reason;
/// the metadata key and the scheme are case-insensitive; health checks stay open.
async fn bad_tokens(urls: &[String]) {
    let url = &urls[0];
    let none = client(url, None).await;
    let s = call(&none, "Acquire", "team-a").await.expect_err("none");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("missing token"), "{}", s.message());
    let unknown = client(url, Some("fgt_nope")).await;
    let s = call(&unknown, "Acquire", "team-a").await.expect_err("x");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("unknown token"), "{}", s.message());
    let expired = client(url, Some("fgt_expired")).await;
    let s = call(&expired, "Acquire", "team-a").await.expect_err("x");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(
        s.message().contains("\"expired\" has expired"),
        "{}",
        s.message()
    );

    // Raw metadata: the wrong scheme, no scheme, and keys or schemes in other cases.
    let channel = none.channel().clone();
    let raw = |key: &'static str, value: &'static str| {
        let mut req = tonic::Request::new(pb::StatusRequest {
            namespace: "team-a".into(),
            check: Some(pb::LimitCheck {
                key: "k".into(),
                cost: 1,
                policy: Some(pb::limit_check::Policy::PolicyName("api".into())),
            }),
        });
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()).expect("key");
        req.metadata_mut()
            .insert(key, value.parse().expect("value"));
        req
    };
    let mut rl = pb::rate_limiter_client::RateLimiterClient::new(channel);
    for (key, value) in [
        ("authorization", "Basic fgt_app_a"),
        ("authorization", "fgt_app_a"),
        ("authorization", "Bearer"),
    ] {
        let s = rl.status(raw(key, value)).await.expect_err(value);
        assert_eq!(s.code(), Code::Unauthenticated, "{value}");
        assert!(s.message().contains("malformed"), "{}", s.message());
    }
    for (key, value) in [
        ("Authorization", "Bearer fgt_app_a"),
        ("AUTHORIZATION", "bearer fgt_app_a"),
    ] {
        rl.status(raw(key, value))
            .await
            .unwrap_or_else(|e| panic!("{key}: {value}: {e:?}"));
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(none.channel().clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health checks need no token");
}

/// One token flooding past its rate is refused with RESOURCE_EXHAUSTED and retry info
/// while another token keeps being served.
async fn per_token_rate(urls: &[String]) {
    let flood = client(&urls[0], Some("fgt_flood")).await;
    let calm = client(&urls[0], Some("fgt_calm")).await;
    let mut refused_at = None;
    for i in 0..20 {
        match call(&flood, "Acquire", "team-a").await {
            Ok(()) => {}
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("\"flood\""), "{}", s.message());
                let ms: u64 = s
                    .metadata()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("retry-after-ms");
                assert!(ms > 0);
                refused_at = Some(i);
                break;
            }
        }
        call(&calm, "Acquire", "team-a")
            .await
            .expect("calm is served");
    }
    assert_eq!(refused_at, Some(5), "5/h admits exactly 5");
    for _ in 0..10 {
        call(&calm, "Acquire", "team-a")
            .await
            .expect("calm is served");
    }
}

/// Operator and admin actions and refused attempts land in the audit trail with the
/// token's name, the namespace and the outcome; a team's operator sees its own entries.
async fn audit_trail(urls: &[String]) {
    let op = client(&urls[0], Some("fgt_operator_a")).await;
    let admin = client(&urls[0], Some("fgt_admin_a")).await;
    let app = client(&urls[0], Some("fgt_app_a")).await;
    call(&op, "SetState", "team-a").await.expect("set state");
    call(&admin, "Purge", "team-a").await.expect("purge");
    let _ = call(&op, "Purge", "team-a")
        .await
        .expect_err("operator purge");
    let _ = call(&app, "SetState", "team-a")
        .await
        .expect_err("app set state");
    let _ = call(&op, "Archive", "team-b")
        .await
        .expect_err("other team");
    // Without a valid token: refused, logged, never stored (a flood of them would push
    // the operators' entries out of the bounded trail).
    for token in [None, Some("fgt_nobody")] {
        let anyone = client(&urls[0], token).await;
        let s = call(&anyone, "SetState", "team-a")
            .await
            .expect_err("no valid token");
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    let root = client(&urls[0], Some("fgt_root")).await;
    let entries = audit_log(&root, 100).await;
    let has = |caller: &str, rpc: &str, ns: &str, outcome: &str| {
        entries.iter().any(|e| {
            e.caller == caller && e.rpc == rpc && e.namespace == ns && e.outcome == outcome
        })
    };
    assert!(
        has("operator-a", "SetState", "team-a", "Ok"),
        "{entries:#?}"
    );
    assert!(has("admin-a", "Purge", "team-a", "Ok"), "{entries:#?}");
    assert!(
        has("operator-a", "Purge", "", "PermissionDenied"),
        "{entries:#?}"
    );
    assert!(
        has("app-a", "SetState", "", "PermissionDenied"),
        "{entries:#?}"
    );
    assert!(
        has("operator-a", "Archive", "team-b", "PermissionDenied"),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e.caller != "unauthenticated"),
        "{entries:#?}"
    );
    let refusal = entries
        .iter()
        .find(|e| e.rpc == "Archive" && e.namespace == "team-b")
        .expect("refused archive");
    assert_eq!(
        refusal.detail,
        "namespace \"team-b\": token \"operator-a\" is not granted it"
    );
    assert_eq!(refusal.role, "operator");
    // team-a's operator sees team-a's entries, not team-b's nor server-wide ones.
    let mine = audit_log(&op, 100).await;
    assert!(mine.iter().any(|e| e.rpc == "SetState"));
    assert!(mine.iter().all(|e| e.namespace == "team-a"), "{mine:#?}");
}

on_both_stores!(1, &config() =>
    each_role_against_each_rpc,
    team_a_cannot_touch_team_b,
    prefix_grant,
    bad_tokens,
    per_token_rate,
    audit_trail,
);

/// Tokens reload with the configuration file: a token added to the file is accepted, one
/// removed is refused, a file without any token is refused as a whole (authentication
/// stays on), and each reload leaves a `ConfigReload` audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reload_with_the_config() {
    let base = config();
    let server = floodgate_tests::server::TestServer::in_memory(&base);
    let url = server.url().to_owned();
    let path = server.config_path().expect("config file").to_owned();
    let late = client(&url, Some("fgt_late")).await;
    let s = call(&late, "Acquire", "team-a").await.expect_err("not yet");
    assert_eq!(s.code(), Code::Unauthenticated);

    let wait_for = |want_ok: bool| {
        let late = late.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let ok = call(&late, "Acquire", "team-a").await.is_ok();
                if ok == want_ok {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "reload not applied (want ok = {want_ok})"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let added = format!(
        "{base}{}",
        token_tables(&[("late", "fgt_late", r#"["team-a"]"#, "app", "")])
    );
    std::fs::write(&path, &added).expect("rewrite config");
    wait_for(true).await;
    // A Watch the late token opened ends once a reload removes the token.
    let mut watch = late
        .circuit_breakers()
        .watch(pb::WatchBreakersRequest {
            namespace: "team-a".into(),
            breakers: vec!["pay".into()],
        })
        .await
        .expect("Watch with the late token")
        .into_inner();
    assert_eq!(
        watch
            .message()
            .await
            .expect("first event")
            .expect("event")
            .reason,
        "current"
    );
    std::fs::write(&path, &base).expect("rewrite config");
    wait_for(false).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the Watch of a removed token kept running");
    let status = ended.expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("\"late\""), "{status:?}");

    // No tokens at all: refused; the old tokens keep working and the late one stays out.
    let policies_only = base.split("\n[[tokens]]").next().expect("head").to_owned();
    std::fs::write(&path, format!("{policies_only}\n# no tokens\n")).expect("rewrite");
    let root = client(&url, Some("fgt_root")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let entries = audit_log(&root, 20).await;
        let reloads: Vec<_> = entries.iter().filter(|e| e.rpc == "ConfigReload").collect();
        assert!(reloads.iter().all(|e| e.caller == "server"), "{reloads:#?}");
        if reloads.iter().any(|e| e.outcome == "InvalidArgument") {
            assert!(reloads.iter().filter(|e| e.outcome == "Ok").count() >= 2);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{entries:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let none = client(&url, None).await;
    let s = call(&none, "Acquire", "team-a")
        .await
        .expect_err("still on");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("would turn authentication off"))
    );
}

/// An audited call cut short by its deadline (Redis answers 400 ms late, the caller gives
/// up after 150 ms) still leaves an entry, `Cancelled`: what it did until then stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audited_call_cut_short_is_recorded_as_cancelled() {
    use floodgate_tests::{
        fault_proxy::FaultProxy,
        redis::TestRedis,
        server::{ServerOptions, TestServer},
    };
    let redis = TestRedis::private();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = TestServer::start(ServerOptions {
        redis_url: Some(proxy.url()),
        config: Some(config()),
        store_timeout: Some(std::time::Duration::from_secs(5)),
        ..Default::default()
    });
    let op = client(server.url(), Some("fgt_operator_a")).await;
    proxy.delay(std::time::Duration::from_millis(400));
    let mut request = tonic::Request::new(pb::SetBreakerStateRequest {
        namespace: "team-a".into(),
        breaker: "pay".into(),
        state: pb::BreakerState::ForcedOpen as i32,
    });
    request.set_timeout(std::time::Duration::from_millis(150));
    let s = op
        .circuit_breakers()
        .set_state(request)
        .await
        .expect_err("cut short by its deadline");
    assert_eq!(s.code(), Code::Cancelled, "{s:?}");
    proxy.pass();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let entries = audit_log(&op, 20).await;
        if let Some(e) = entries.iter().find(|e| e.rpc == "SetState") {
            assert_eq!(
                (e.caller.as_str(), e.namespace.as_str(), e.outcome.as_str()),
                ("operator-a", "team-a", "Cancelled"),
                "{e:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no entry for the cut-short SetState: {entries:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The newest `limit` audit entries `c` may see.
async fn audit_log(c: &Client, limit: u32) -> Vec<pb::AuditEntry> {
    c.admin()
        .audit_log(pb::AuditLogRequest { limit })
        .await
        .expect("audit")
        .into_inner()
        .entries
}

/// ServerStatus lists the Envoy rate limit domains (namespaces) the caller's grant covers:
/// a team's operator does not learn the other teams' domains; `*` sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_status_shows_only_the_granted_rls_domains() {
    use floodgate_tests::server::{ServerOptions, TestServer};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rls");
    let server = TestServer::start(ServerOptions {
        config: Some(config()),
        extra_args: vec!["--rls-config".into(), fixtures.display().to_string()],
        ..Default::default()
    });
    let status = |token: &'static str, ns: &'static str| {
        let url = server.url().to_owned();
        async move {
            client(&url, Some(token))
                .await
                .admin()
                .server_status(pb::ServerStatusRequest {
                    namespace: ns.into(),
                })
                .await
                .expect("ServerStatus")
                .into_inner()
                .rls_domains
        }
    };
    assert!(status("fgt_operator_a", "team-a").await.is_empty());
    let all = status("fgt_root", "").await;
    assert!(
        all.contains(&"shop".to_owned()) && all.len() >= 7,
        "{all:?}"
    );
}
