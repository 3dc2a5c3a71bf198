//! One fuzz target for everything a client or an operator can hand the server: the first
//! byte picks a floodgate.v1 request type (or Envoy's RateLimitRequest), the rest is decoded
//! as protobuf and served by the real service on the in-memory store (validation included);
//! or the rest is read as the TOML configuration or an envoyproxy/ratelimit YAML file.
//! Any panic is a finding; errors (INVALID_ARGUMENT and friends) are the expected outcome.
#![no_main]

use std::sync::{Arc, LazyLock};

use floodgate_proto::envoy::service::ratelimit::v3::{
    RateLimitRequest, rate_limit_service_server::RateLimitService,
};
use floodgate_proto::v1::{
    self as pb, admin_server::Admin, circuit_breakers_server::CircuitBreakers,
    dead_letters_server::DeadLetters, rate_limiter_server::RateLimiter,
};
use floodgate_server::{
    config::{Caps, Config, Overrides},
    rls::service::RlsService,
    service::{
        admin::AdminService, circuit_breakers::CircuitBreakersService,
        dead_letters::DeadLettersService, rate_limiter::RateLimiterService, state::AppState,
    },
    store::memory::MemoryStore,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Request;

const CONFIG: &str = r#"
[policies.api]
algorithm = "token_bucket"
limit = 10
period = "1s"

[policies.conc]
algorithm = "concurrency"
limit = 3

[breakers.default]

[queues.default]
"#;

const RLS: &str = "domain: shop\ndescriptors:\n  - key: key\n    rate_limit:\n      unit: second\n      requests_per_unit: 5\n  - key: user\n    descriptors:\n      - key: path\n        value: /a*\n        rate_limit: {unit: minute, requests_per_unit: 2}\n";

struct World {
    rt: tokio::runtime::Runtime,
    limiter: RateLimiterService<MemoryStore>,
    breakers: CircuitBreakersService<MemoryStore>,
    letters: DeadLettersService<MemoryStore>,
    admin: AdminService<MemoryStore>,
    rls: RlsService<MemoryStore>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("floodgate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rls = dir.join("shop.yaml");
    std::fs::write(&rls, RLS).unwrap();
    let file = Config::parse_file("fuzz", CONFIG).unwrap();
    let overrides = Overrides {
        rls_config: Some(rls),
        ..Overrides::default()
    };
    let config = Config::from_file(file, overrides).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let state: Arc<AppState<MemoryStore>> =
        rt.block_on(async { AppState::new(MemoryStore::default(), config) });
    World {
        limiter: RateLimiterService::new(state.clone()),
        breakers: CircuitBreakersService::new(state.clone()),
        letters: DeadLettersService::new(state.clone()),
        admin: AdminService::new(state.clone()),
        rls: RlsService::new(state),
        rt,
    }
});

/// Decodes `bytes` as `T` and, when they decode, runs `call` on it (result ignored).
macro_rules! serve {
    ($w:expr, $bytes:expr, $ty:ty, $svc:ident . $method:ident) => {
        if let Ok(m) = <$ty>::decode($bytes) {
            let _ = $w.rt.block_on($w.$svc.$method(Request::new(m)));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let w = &*WORLD;
    match which % 28 {
        0 => serve!(w, rest, pb::AcquireRequest, limiter.acquire),
        1 => serve!(w, rest, pb::ReleaseRequest, limiter.release),
        2 => serve!(w, rest, pb::RenewRequest, limiter.renew),
        3 => serve!(w, rest, pb::StatusRequest, limiter.status),
        4 => serve!(w, rest, pb::ReportRequest, breakers.report),
        5 => serve!(w, rest, pb::GetBreakerRequest, breakers.get),
        6 => serve!(w, rest, pb::ListBreakersRequest, breakers.list),
        7 => serve!(w, rest, pb::SetBreakerStateRequest, breakers.set_state),
        8 => {
            // The stream is dropped at once: its relay task ends on the closed channel.
            if let Ok(m) = pb::WatchBreakersRequest::decode(rest) {
                let _ = w.rt.block_on(w.breakers.watch(Request::new(m)));
            }
        }
        9 => serve!(w, rest, pb::BreakerHistoryRequest, breakers.history),
        10 => serve!(w, rest, pb::PublishRequest, letters.publish),
        11 => serve!(w, rest, pb::GetDeadLetterRequest, letters.get),
        12 => serve!(w, rest, pb::ListDeadLettersRequest, letters.list),
        13 => serve!(w, rest, pb::StatsRequest, letters.stats),
        14 => serve!(w, rest, pb::ClaimRequest, letters.claim),
        15 => serve!(w, rest, pb::AckRequest, letters.ack),
        16 => serve!(w, rest, pb::NackRequest, letters.nack),
        17 => serve!(w, rest, pb::RedriveRequest, letters.redrive),
        18 => serve!(w, rest, pb::ArchiveRequest, letters.archive),
        19 => serve!(w, rest, pb::RestoreRequest, letters.restore),
        20 => serve!(w, rest, pb::PurgeRequest, letters.purge),
        21 => serve!(w, rest, pb::ResetLimitRequest, admin.reset_limit),
        22 => serve!(w, rest, pb::ServerStatusRequest, admin.server_status),
        23 => serve!(w, rest, pb::TopKeysRequest, admin.top_keys),
        24 => serve!(w, rest, RateLimitRequest, rls.should_rate_limit),
        25 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(file) = Config::parse_file("fuzz", text)
            {
                let _ = Config::from_file(file, Overrides::default());
            }
        }
        26 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = floodgate_server::rls::yaml::parse(text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let caps = Caps {
                    sliding_log: 10_000,
                    concurrency: 10_000,
                };
                let mut config = Default::default();
                let _ =
                    floodgate_server::rls::config::add_file(&mut config, "fuzz.yaml", text, caps);
            }
        }
    }
});
