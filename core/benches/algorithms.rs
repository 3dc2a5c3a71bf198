//! Criterion benches of the pure algorithms: one decision each, and an Acquire of three
//! checks. `cargo bench -p floodgate-core`.
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_core::{
    Algorithm, Policy, PolicySpec,
    acquire::{CheckRequest, LimitState, acquire},
    concurrency, fixed_window, sliding_log, sliding_window, token_bucket,
};

const T0: u64 = 1_700_000_000_000_000;

fn policy(algorithm: Algorithm, limit: u64) -> Policy {
    Policy::new(PolicySpec {
        algorithm,
        limit,
        period: 1_000_000,
        burst: 0,
        fail_mode: None,
        lease_ttl: Some(1_000_000),
        shadow: false,
    })
    .unwrap()
}

fn algorithms(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    // Time advances 1 µs per call; limits are high enough that most calls are admitted.
    let p = policy(Algorithm::TokenBucket, 1_000_000);
    let (mut s, mut now) = (token_bucket::State::default(), T0);
    g.bench_function("token_bucket", |b| {
        b.iter(|| {
            now += 1;
            token_bucket::token_bucket(&mut s, &p, now, 1)
        })
    });
    let p = policy(Algorithm::SlidingWindow, 1_000_000);
    let (mut s, mut now) = (sliding_window::State::default(), T0);
    g.bench_function("sliding_window", |b| {
        b.iter(|| {
            now += 1;
            sliding_window::sliding_window(&mut s, &p, now, 1)
        })
    });
    let p = policy(Algorithm::FixedWindow, 1_000_000);
    let (mut s, mut now) = (fixed_window::State::default(), T0);
    g.bench_function("fixed_window", |b| {
        b.iter(|| {
            now += 1;
            fixed_window::fixed_window(&mut s, &p, now, 1)
        })
    });
    let p = policy(Algorithm::SlidingLog, 10_000);
    let (mut s, mut now) = (sliding_log::State::default(), T0);
    g.bench_function("sliding_log (10k limit)", |b| {
        b.iter(|| {
            now += 100;
            sliding_log::sliding_log(&mut s, &p, now, 1)
        })
    });
    let p = policy(Algorithm::Concurrency, 16);
    let (mut s, mut now) = (concurrency::State::default(), T0);
    // Distinct lease ids, as the server's UUIDs are; about 10 leases are live at a time.
    let members: Vec<String> = (0..16)
        .map(|i| concurrency::member(1, &format!("bench{i}")))
        .collect();
    let mut i = 0;
    g.bench_function("concurrency (16 slots)", |b| {
        b.iter(|| {
            now += 100_000;
            i = (i + 1) % members.len();
            concurrency::concurrency(&mut s, &p, &members[i], now, 1)
        })
    });
    g.finish();
}

fn multi_check(c: &mut Criterion) {
    let ps = [
        policy(Algorithm::TokenBucket, 1_000_000),
        policy(Algorithm::FixedWindow, 1_000_000),
        policy(Algorithm::SlidingWindow, 1_000_000),
    ];
    let mut states: Vec<LimitState> = ps
        .iter()
        .map(|p| LimitState::empty(p.algorithm()))
        .collect();
    let reqs: Vec<CheckRequest<'_>> = ps
        .iter()
        .map(|p| CheckRequest {
            policy: p,
            cost: 1,
            lease_member: None,
        })
        .collect();
    let mut now = T0;
    let mut g = c.benchmark_group("acquire");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("three checks", |b| {
        b.iter(|| {
            now += 1;
            let mut refs: Vec<&mut LimitState> = states.iter_mut().collect();
            acquire(&mut refs, &reqs, now, true)
        })
    });
    g.finish();
}

criterion_group!(benches, algorithms, multi_check);
criterion_main!(benches);
