//! Conformance of the dead-letter queue: `lua/dlq*.lua`, through the Redis store exactly as
//! the server calls it, against its pure twin `core::dead_letters::Queue`, on a real Redis.
//! Store call → script: `dlq_publish` → `dlq_publish.lua`, `dlq_claim` → `dlq_claim.lua`,
//! `dlq_remove` (Ack) → `dlq_ack.lua`, `dlq_nack` → `dlq_nack.lua`, `dlq_archive` →
//! `dlq_archive.lua`, `dlq_restore` → `dlq_restore.lua`, `dlq_purge_archived` →
//! `dlq_purge_archived.lua`, `dlq_stats` → `dlq_stats.lua`.
//!
//! Random limits (`max_len` 1..=8, retention 1 s..=1 h, `max_deliveries` 0..=3) and random
//! sequences of Publish (reasons, payloads incl. empty, metadata, idempotency keys from a
//! small pool, explicit or default `first_failed_at`), Claim (1..=5 entries for 1 ms..=5 s),
//! Ack, Nack, Archive, Restore, Purge (archived) and Stats run on an explicit clock that only
//! moves forward: by µs, ms, seconds, minutes, past the retention, and exactly onto (or 1 µs
//! around) the next claim deadline, the instant the oldest entry ages out and the expiry of
//! an idempotency key, so the steps land where an answer flips. Ids come from those seen
//! (publish, restore, the archive), from those claimed right now, from valid ids that name
//! nothing, and from seen ids spelled another way the service accepts (`<ms>` alone,
//! leading zeros, `-+<seq>`: `EntryId::from_str` reads them, so the scripts must too).
//!
//! After every step both sides must agree on the step's answer (ids and duplicate flags;
//! claimed entries with every field, payload and delivery count, in order, and the number
//! archived; the counts of Ack / Nack / Archive / Purge; Restore's new ids), on the whole
//! `QueueStats`, and on the complete queue and archive as `dlq_scan` reads them, oldest
//! first with payloads and newest first without; and on the raw state no call reads back
//! (payload hashes, claims with their deadlines, delivery counts, the consumer group's
//! pending count and last delivered id, last ids, live idempotency records), where a leak
//! would show. At the end `dlq_read` of every id seen must agree as well.
//!
//! Deterministic tests pin what random sequences reach rarely: more than 1,000 expired
//! entries are trimmed at most 1,000 per publish (age first, then length, with exact
//! counts), ids never go back when the clock does, a claim is claimable again exactly at its
//! deadline, and an idempotency key answers duplicates until exactly its retention.
use std::collections::BTreeMap;

use floodgate_core::{
    Micros,
    dead_letters::{EntryId, MAX_BATCH, Message, Queue, QueueLimits, QueueStats},
    time::SECOND,
};
use floodgate_server::store::StoredLetter;
use floodgate_tests::{
    conformance_support::{EPOCH, Env, runner},
    dlq_support::{DlqStore, model_contents, model_letter, model_raw, without_payloads},
};
use proptest::{prelude::*, test_runner::TestCaseError};

const MS: Micros = 1_000;
const MINUTE: Micros = 60 * SECOND;
const HOUR: Micros = 60 * MINUTE;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// How far the clock moves before a step (never back).
#[derive(Debug, Clone, Copy)]
enum Advance {
    /// Same microsecond.
    Zero,
    /// 1..1000 µs.
    Micros(u64),
    /// 1..1000 ms.
    Millis(u64),
    /// 1..=10 s.
    Seconds(u64),
    /// 1..=70 min (per-minute buckets fall out of the last hour).
    Minutes(u64),
    /// The retention plus 0..2 s: everything published before has aged out.
    PastRetention(u64),
    /// To the next claim deadline -1, 0 or +1 µs (0 when no deadline lies ahead).
    ToDeadline(i64),
    /// To the first instant the oldest entry ages out (`true`) or 1 µs before (`false`).
    ToTrimEdge(bool),
    /// To the next expiry of an idempotency key (`true`) or 1 µs before (`false`).
    ToKeyExpiry(bool),
}

impl Advance {
    fn resolve(self, now: Micros, model: &Queue, limits: &QueueLimits) -> Micros {
        match self {
            Advance::Zero => 0,
            Advance::Micros(n) => n,
            Advance::Millis(n) => n * MS,
            Advance::Seconds(n) => n * SECOND,
            Advance::Minutes(n) => n * MINUTE,
            Advance::PastRetention(extra) => limits.retention + extra,
            Advance::ToDeadline(off) => model
                .claims
                .values()
                .map(|d| d.saturating_add_signed(off))
                .filter(|t| *t > now)
                .min()
                .map_or(0, |t| t - now),
            Advance::ToTrimEdge(exact) => model.entries.keys().next().map_or(0, |id| {
                // Trimmed once `id.ms < (now - retention) / 1 ms`.
                let edge = (id.ms + 1) * MS + limits.retention - u64::from(!exact);
                edge.saturating_sub(now)
            }),
            Advance::ToKeyExpiry(exact) => model
                .idempotency
                .values()
                .map(|(_, exp)| exp - u64::from(!exact))
                .filter(|t| *t > now)
                .min()
                .map_or(0, |t| t - now),
        }
    }
}

fn advance() -> impl Strategy<Value = Advance> {
    prop_oneof![
        3 => Just(Advance::Zero),
        3 => (1u64..1_000).prop_map(Advance::Micros),
        4 => (1u64..1_000).prop_map(Advance::Millis),
        2 => (1u64..=10).prop_map(Advance::Seconds),
        1 => (1u64..=70).prop_map(Advance::Minutes),
        1 => (0u64..2_000_000).prop_map(Advance::PastRetention),
        4 => Just(Advance::ToDeadline(0)),
        2 => prop_oneof![Just(-1i64), Just(1)].prop_map(Advance::ToDeadline),
        2 => any::<bool>().prop_map(Advance::ToTrimEdge),
        1 => any::<bool>().prop_map(Advance::ToKeyExpiry),
    ]
}

const REASONS: [&str; 4] = ["", "timeout", "bad payload", "schéma"];
const ERROR_CLASSES: [&str; 3] = ["", "Timeout", "io.Error"];
const SOURCES: [&str; 3] = ["", "billing", "svc ä/1"];
/// Idempotency keys; empty (none) half the time.
const KEYS: [&str; 6] = ["", "", "", "k1", "k2", "k3"];

/// A publish, resolved into a [`Message`].
#[derive(Debug, Clone)]
struct Pub {
    reason: usize,
    error_class: usize,
    source: usize,
    attempts: u32,
    payload: Vec<u8>,
    metadata: BTreeMap<String, String>,
    trace_id: String,
    key: usize,
    first_failed_at: Option<Micros>,
}

impl Pub {
    fn message(&self) -> Message {
        Message {
            payload: self.payload.clone(),
            reason: REASONS[self.reason].to_owned(),
            error_class: ERROR_CLASSES[self.error_class].to_owned(),
            source: SOURCES[self.source].to_owned(),
            attempts: self.attempts,
            metadata: self.metadata.clone(),
            trace_id: self.trace_id.clone(),
            first_failed_at: self.first_failed_at,
            idempotency_key: KEYS[self.key].to_owned(),
        }
    }
}

fn publish() -> impl Strategy<Value = Pub> {
    (
        (0..REASONS.len(), 0..ERROR_CLASSES.len(), 0..SOURCES.len()),
        prop_oneof![3 => Just(0u32), 2 => 1u32..5, 1 => Just(u32::MAX)],
        prop_oneof![
            1 => Just(Vec::new()),
            4 => prop::collection::vec(any::<u8>(), 0..24),
        ],
        prop::collection::btree_map("[a-z]{1,3}", "[a-z0-9 \"\\\\é{}]{0,6}", 0..3),
        "[0-9a-f]{0,8}",
        0..KEYS.len(),
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(0)),
            1 => (EPOCH - HOUR..EPOCH + HOUR).prop_map(Some),
            1 => Just(Some(u64::MAX)),
        ],
    )
        .prop_map(
            |((reason, error_class, source), attempts, payload, metadata, trace_id, key, ff)| Pub {
                reason,
                error_class,
                source,
                attempts,
                payload,
                metadata,
                trace_id,
                key,
                first_failed_at: ff,
            },
        )
}

/// Which id an id-taking step names.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// One seen earlier (published, restored; for archive steps: ever archived).
    Seen(usize),
    /// One there right now (claimed; for archive steps: in the archive).
    Current(usize),
    /// A valid id that names nothing (yet).
    Garbage(usize),
    /// One seen earlier, spelled another way core reads the same (or, `<ms>` alone, as
    /// `<ms>-0`): leading zeros, a `+` before the sequence, no sequence.
    Respelled(usize, usize),
}

fn picks() -> impl Strategy<Value = Vec<Pick>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<usize>().prop_map(Pick::Seen),
            4 => any::<usize>().prop_map(Pick::Current),
            1 => any::<usize>().prop_map(Pick::Garbage),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(i, f)| Pick::Respelled(i, f)),
        ],
        1..=3,
    )
}

#[derive(Debug, Clone)]
enum Op {
    Publish(Pub),
    Claim {
        count: usize,
        visibility: Micros,
    },
    Ack(Vec<Pick>),
    Nack(Vec<Pick>),
    Archive(Vec<Pick>),
    Restore(Vec<Pick>),
    Purge(Vec<Pick>),
    /// Nothing but the checks every step makes.
    Stats,
}

fn visibility() -> impl Strategy<Value = Micros> {
    prop_oneof![
        1 => Just(MS),
        1 => Just(5 * SECOND),
        3 => MS..=5 * SECOND,
        2 => (1u64..=20).prop_map(|n| n * MS),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        7 => publish().prop_map(Op::Publish),
        5 => (1usize..=5, visibility())
            .prop_map(|(count, visibility)| Op::Claim { count, visibility }),
        2 => picks().prop_map(Op::Ack),
        2 => picks().prop_map(Op::Nack),
        2 => picks().prop_map(Op::Archive),
        2 => picks().prop_map(Op::Restore),
        1 => picks().prop_map(Op::Purge),
        1 => Just(Op::Stats),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    limits: QueueLimits,
    /// Start at `EPOCH + offset`, so minute edges fall anywhere.
    offset: Micros,
    steps: Vec<(Advance, Op)>,
}

fn case() -> impl Strategy<Value = Case> {
    let retention = prop_oneof![
        2 => Just(SECOND),
        1 => Just(HOUR),
        3 => SECOND..=30 * SECOND,
        1 => SECOND..=HOUR,
    ];
    (
        1u64..=8,
        retention,
        0u32..=3,
        0..2 * MINUTE,
        prop::collection::vec((advance(), op()), 1..=40),
    )
        .prop_map(|(max_len, retention, max_deliveries, offset, steps)| Case {
            limits: QueueLimits {
                retention,
                max_len,
                max_deliveries,
            },
            offset,
            steps,
        })
}

// ---------------------------------------------------------------------------------------
// Driving both sides
// ---------------------------------------------------------------------------------------

/// Ids that name nothing in `last`'s stream (yet), all valid stream ids.
fn garbage(i: usize, last: EntryId) -> String {
    match i % 4 {
        0 => "1-0".to_owned(),
        1 => "0-1".to_owned(),
        2 => format!("{}-{}", last.ms, last.seq + 1),
        _ => format!("{}-0", last.ms + 1),
    }
}

/// `id` spelled another way that the service accepts (`EntryId::from_str`).
fn respell(id: &str, form: usize) -> String {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    match form % 4 {
        0 => format!("0{ms}-{seq}"),
        1 => format!("{ms}-00{seq}"),
        2 => format!("{ms}-+{seq}"),
        _ => ms.to_owned(),
    }
}

fn nth<T: ToString>(mut items: impl ExactSizeIterator<Item = T>, i: usize) -> Option<String> {
    let n = items.len();
    (n > 0).then(|| items.nth(i % n).unwrap().to_string())
}

/// Queue ids for `picks`.
fn queue_ids(picks: &[Pick], seen: &[String], model: &Queue) -> Vec<String> {
    picks
        .iter()
        .map(|p| match *p {
            Pick::Seen(i) => nth(seen.iter(), i),
            Pick::Current(i) => nth(model.claims.keys(), i),
            Pick::Garbage(i) => Some(garbage(i, model.last_id)),
            Pick::Respelled(i, f) => nth(seen.iter(), i).map(|id| respell(&id, f)),
        })
        .map(|id| id.unwrap_or_else(|| garbage(0, model.last_id)))
        .collect()
}

/// Archive ids for `picks`.
fn archive_ids(picks: &[Pick], seen: &[String], model: &Queue) -> Vec<String> {
    picks
        .iter()
        .map(|p| match *p {
            Pick::Seen(i) => nth(seen.iter(), i),
            Pick::Current(i) => nth(model.archive.keys(), i),
            Pick::Garbage(i) => Some(garbage(i, model.archive_last_id)),
            Pick::Respelled(i, f) => nth(seen.iter(), i).map(|id| respell(&id, f)),
        })
        .map(|id| id.unwrap_or_else(|| garbage(0, model.archive_last_id)))
        .collect()
}

fn parse(ids: &[String]) -> Vec<EntryId> {
    ids.iter()
        .map(|i| i.parse().expect("the test only sends valid ids"))
        .collect()
}

fn remember(seen: &mut Vec<String>, id: String) {
    if !seen.contains(&id) {
        seen.push(id);
    }
}

/// Stats, the complete queue and archive read both ways, and the raw state beside them
/// (payload hashes, claims with their deadlines, delivery counts, the consumer group, last
/// ids, live idempotency records): Redis (left) vs core (right).
fn same_state(
    store: &DlqStore<'_>,
    model: &Queue,
    now: Micros,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.stats(now), model.stats(now), "{}: stats", what);
    prop_assert_eq!(
        store.raw(&KEYS, now),
        model_raw(model, &KEYS, now),
        "{}: raw state",
        what
    );
    for archived in [false, true] {
        let name = if archived { "archive" } else { "queue" };
        prop_assert_eq!(
            store.scan_all(archived, false, true),
            model_contents(model, archived, false),
            "{}: the {} oldest first, with payloads",
            what,
            name
        );
        prop_assert_eq!(
            store.scan_all(archived, true, false),
            without_payloads(model_contents(model, archived, true)),
            "{}: the {} newest first, without payloads",
            what,
            name
        );
    }
    Ok(())
}

/// Drives one case through Redis and the model; the first difference fails the case.
fn run_case(env: &Env, case: &Case) -> Result<(), TestCaseError> {
    let limits = case.limits;
    let store = DlqStore::new(env, limits);
    let mut model = Queue::default();
    let mut now = EPOCH + case.offset;
    let mut seen: Vec<String> = Vec::new();
    let mut seen_archived: Vec<String> = Vec::new();
    for (i, (adv, op)) in case.steps.iter().enumerate() {
        now += adv.resolve(now, &model, &limits);
        let what = format!("step {i} at {now} ({adv:?}, {op:?})");
        match op {
            Op::Publish(p) => {
                let m = p.message();
                let got = store.publish(&m, now);
                let (id, dup) = model.publish(m, now, &limits);
                prop_assert_eq!(&got, &(id.to_string(), dup), "{}: publish", &what);
                remember(&mut seen, got.0);
            }
            Op::Claim { count, visibility } => {
                let (letters, archived) = store.claim(*count, *visibility, now);
                let c = model.claim(*count, *visibility, now, &limits);
                let want: Vec<StoredLetter> = c
                    .entries
                    .iter()
                    .map(|(id, e)| model_letter(*id, e, false))
                    .collect();
                prop_assert_eq!(letters, want, "{}: claimed entries", &what);
                prop_assert_eq!(archived, c.archived, "{}: claim archived", &what);
            }
            Op::Ack(p) => {
                let ids = queue_ids(p, &seen, &model);
                let got = store.ack(&ids);
                prop_assert_eq!(got, model.remove(&parse(&ids)), "{}: ack {:?}", &what, ids);
            }
            Op::Nack(p) => {
                let ids = queue_ids(p, &seen, &model);
                let got = store.nack(&ids, now);
                let want = model.nack(&parse(&ids), now);
                prop_assert_eq!(got, want, "{}: nack {:?}", &what, ids);
            }
            Op::Archive(p) => {
                let ids = queue_ids(p, &seen, &model);
                let got = store.archive(&ids, now);
                let want = model.archive(&parse(&ids), now);
                prop_assert_eq!(got, want, "{}: archive {:?}", &what, ids);
            }
            Op::Restore(p) => {
                let ids = archive_ids(p, &seen_archived, &model);
                let got = store.restore(&ids, now);
                let want: Vec<Option<String>> = model
                    .restore(&parse(&ids), now)
                    .into_iter()
                    .map(|id| id.map(|id| id.to_string()))
                    .collect();
                prop_assert_eq!(&got, &want, "{}: restore {:?}", &what, ids);
                for id in got.into_iter().flatten() {
                    remember(&mut seen, id);
                }
            }
            Op::Purge(p) => {
                let ids = archive_ids(p, &seen_archived, &model);
                let got = store.purge_archived(&ids);
                let want = model.remove_archived(&parse(&ids));
                prop_assert_eq!(got, want, "{}: purge archived {:?}", &what, ids);
            }
            Op::Stats => {}
        }
        same_state(&store, &model, now, &what)?;
        for id in model.archive.keys() {
            remember(&mut seen_archived, id.to_string());
        }
    }
    // Reads by id of everything ever seen (gone ones read as None).
    for (archived, ids) in [(false, &seen), (true, &seen_archived)] {
        let from = if archived {
            &model.archive
        } else {
            &model.entries
        };
        let want: Vec<Option<StoredLetter>> = parse(ids)
            .into_iter()
            .map(|id| from.get(&id).map(|e| model_letter(id, e, archived)))
            .collect();
        prop_assert_eq!(
            store.read(archived, ids),
            want,
            "dlq_read of every id seen (archived: {})",
            archived
        );
    }
    Ok(())
}

#[test]
fn dlq_lua_behaves_like_core() {
    let env = Env::start();
    let mut runner = runner(file!(), 48);
    if let Err(e) = runner.run(&case(), |case| run_case(&env, &case)) {
        panic!("dead-letter queue: Lua and core disagree: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic
// ---------------------------------------------------------------------------------------

fn letter(reason: &str, payload: &[u8]) -> Message {
    Message {
        payload: payload.to_vec(),
        reason: reason.to_owned(),
        ..Message::default()
    }
}

/// Publishes on both sides and requires the same answer.
fn publish_both(
    store: &DlqStore<'_>,
    model: &mut Queue,
    limits: &QueueLimits,
    m: &Message,
    now: Micros,
) -> (String, bool) {
    let got = store.publish(m, now);
    let (id, dup) = model.publish(m.clone(), now, limits);
    assert_eq!(
        got,
        (id.to_string(), dup),
        "publish at {now}: Redis vs core"
    );
    got
}

fn assert_same_state(store: &DlqStore<'_>, model: &Queue, now: Micros, what: &str) {
    if let Err(e) = same_state(store, model, now, what) {
        panic!("Redis and core disagree: {e}");
    }
}

fn trimmed(s: &QueueStats) -> (u64, u64, u64) {
    (
        s.count,
        s.counters.trimmed_by_age,
        s.counters.trimmed_by_length,
    )
}

/// 2,500 expired entries go 1,000 per publish, counted exactly; the entries left are the
/// newest, and the reasons' counts follow.
#[test]
fn more_than_a_batch_of_expired_entries_is_trimmed_a_batch_per_publish() {
    assert_eq!(MAX_BATCH, 1_000);
    let env = Env::start();
    let limits = QueueLimits {
        retention: 10 * SECOND,
        max_len: 100_000,
        max_deliveries: 0,
    };
    let store = DlqStore::new(&env, limits);
    let mut model = Queue::default();
    let t0 = EPOCH;
    for i in 0..2_500u64 {
        let reason = if i < 1_200 { "old" } else { "older" };
        publish_both(
            &store,
            &mut model,
            &limits,
            &letter(reason, &i.to_be_bytes()),
            t0 + i * 100,
        );
    }
    assert_same_state(&store, &model, t0 + SECOND, "after 2,500 publishes");
    let later = t0 + HOUR;
    for (round, want) in [
        (1u64, (1_501u64, 1_000u64, 0u64)),
        (2, (502, 2_000, 0)),
        (3, (3, 2_500, 0)),
        (4, (4, 2_500, 0)),
    ] {
        let now = later + round * MS;
        publish_both(&store, &mut model, &limits, &letter("new", b""), now);
        let s = store.stats(now);
        assert_eq!(
            trimmed(&s),
            want,
            "round {round}: (count, by age, by length)"
        );
        assert_eq!(s.counters.by_reason.get("new"), Some(&round));
        assert_same_state(&store, &model, now, &format!("round {round}"));
    }
    let s = store.stats(later + 5 * MS);
    assert_eq!(s.counters.by_reason.get("old"), None);
    assert_eq!(s.counters.by_reason.get("older"), None);
    assert_eq!(s.counters.published_total, 2_504);
}

/// One budget for both trims: 300 expired and a lowered `max_len` of 10 over 1,500
/// entries take 300 by age and 700 by length, then the rest by length.
#[test]
fn age_and_length_trims_share_one_batch() {
    let env = Env::start();
    let mut limits = QueueLimits {
        retention: 10 * SECOND,
        max_len: 100_000,
        max_deliveries: 0,
    };
    let mut store = DlqStore::new(&env, limits);
    let mut model = Queue::default();
    let t0 = EPOCH;
    for i in 0..1_500u64 {
        // 300 at t0, the rest 5 s later.
        let at = if i < 300 { t0 + i } else { t0 + 5 * SECOND + i };
        publish_both(&store, &mut model, &limits, &letter("r", b"x"), at);
    }
    // A reloaded configuration lowers max_len.
    limits.max_len = 10;
    store.set_limits(limits);
    let now = t0 + 12 * SECOND;
    publish_both(&store, &mut model, &limits, &letter("r", b"y"), now);
    assert_eq!(trimmed(&store.stats(now)), (501, 300, 700));
    assert_same_state(&store, &model, now, "first trim");
    publish_both(&store, &mut model, &limits, &letter("r", b"z"), now + 1);
    assert_eq!(trimmed(&store.stats(now + 1)), (10, 300, 1_192));
    assert_same_state(&store, &model, now + 1, "second trim");
}

/// Publish, Archive and Restore on a clock that goes back keep giving increasing ids
/// (the last id's millisecond with the next sequence), as the model does.
#[test]
fn ids_never_go_back_when_the_clock_does() {
    let env = Env::start();
    let limits = QueueLimits {
        retention: 2 * HOUR,
        max_len: 100,
        max_deliveries: 0,
    };
    let store = DlqStore::new(&env, limits);
    let mut model = Queue::default();
    let t = EPOCH + 123_456;
    let ms = t / MS;
    let mut ids = Vec::new();
    for (now, want) in [
        (t, format!("{ms}-0")),
        (t - SECOND, format!("{ms}-1")),
        (t - HOUR, format!("{ms}-2")),
        (t + 999 - 456, format!("{ms}-3")),
        (t + MS, format!("{}-0", ms + 1)),
        (t, format!("{}-1", ms + 1)),
    ] {
        let (id, dup) = publish_both(&store, &mut model, &limits, &letter("r", b"p"), now);
        assert_eq!(
            (id.as_str(), dup),
            (want.as_str(), false),
            "publish at {now}"
        );
        ids.push(id);
    }
    assert_same_state(&store, &model, t + 2 * MS, "after publishing");

    // The archive's ids: after every id the queue or the archive gave out, never back.
    let archive_at = t + 10 * SECOND;
    let mut archived = Vec::new();
    for (id, now) in ids[..3].iter().zip([archive_at, archive_at - HOUR, t]) {
        let got = store.archive(std::slice::from_ref(id), now);
        assert_eq!(got, model.archive(&parse(std::slice::from_ref(id)), now));
        assert_eq!(got, 1);
    }
    for aid in model.archive.keys() {
        archived.push(aid.to_string());
    }
    let ams = archive_at / MS;
    assert_eq!(
        archived,
        [format!("{ams}-0"), format!("{ams}-1"), format!("{ams}-2")]
    );
    assert_same_state(&store, &model, archive_at, "after archiving");

    // Restore an hour "earlier": new queue ids after the newest id of both streams (here the
    // archive's), so a queue id never names an archived entry too.
    let got = store.restore(&archived, t - HOUR);
    let want: Vec<Option<String>> = model
        .restore(&parse(&archived), t - HOUR)
        .into_iter()
        .map(|id| id.map(|i| i.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        got,
        [3, 4, 5].map(|s| Some(format!("{ams}-{s}"))).to_vec(),
        "restored ids follow the archive's last id"
    );
    // And a publish after that, at the original clock.
    let (id, _) = publish_both(&store, &mut model, &limits, &letter("r", b"q"), t);
    assert_eq!(id, format!("{ams}-6"));
    assert_same_state(&store, &model, t + 2 * MS, "after restoring");
}

/// A claim is claimable again at exactly its deadline, not 1 µs before; a nack makes it
/// claimable at the nack's time; the delivery after `max_deliveries` archives instead.
#[test]
fn claims_come_back_exactly_at_their_deadline() {
    let env = Env::start();
    let limits = QueueLimits {
        retention: HOUR,
        max_len: 10,
        max_deliveries: 3,
    };
    let store = DlqStore::new(&env, limits);
    let mut model = Queue::default();
    let t = EPOCH;
    let vis = 1_500;
    let (id, _) = publish_both(&store, &mut model, &limits, &letter("r", b"p"), t);
    let claim = |model: &mut Queue, now: Micros| {
        let got = store.claim(5, vis, now);
        let c = model.claim(5, vis, now, &limits);
        let want: Vec<StoredLetter> = c
            .entries
            .iter()
            .map(|(id, e)| model_letter(*id, e, false))
            .collect();
        assert_eq!(got, (want, c.archived), "claim at {now}");
        assert_same_state(&store, model, now, &format!("claim at {now}"));
        (
            got.0
                .iter()
                .map(|l| (l.id.clone(), l.delivery_count))
                .collect::<Vec<_>>(),
            got.1,
        )
    };
    assert_eq!(claim(&mut model, t), (vec![(id.clone(), 1)], 0));
    assert_eq!(claim(&mut model, t + vis - 1), (vec![], 0));
    assert_eq!(claim(&mut model, t + vis), (vec![(id.clone(), 2)], 0));
    let n = t + vis + 10;
    assert_eq!(store.nack(std::slice::from_ref(&id), n), 1);
    assert_eq!(model.nack(&parse(std::slice::from_ref(&id)), n), 1);
    assert_eq!(claim(&mut model, n), (vec![(id.clone(), 3)], 0));
    // The fourth delivery would pass max_deliveries: archived with its 3 deliveries.
    assert_eq!(claim(&mut model, n + vis - 1), (vec![], 0));
    assert_eq!(claim(&mut model, n + vis), (vec![], 1));
    let a = store.scan_all(true, false, true);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].delivery_count, a[0].original_id.as_deref()),
        (3, Some(id.as_str()))
    );
    let s = store.stats(n + vis);
    assert_eq!((s.count, s.archived, s.in_flight), (0, 1, 0));
}

/// An idempotency key answers duplicates until exactly `retention` after its publish, then
/// stores anew (and the new record lasts from then).
#[test]
fn idempotency_keys_expire_exactly_after_the_retention() {
    let env = Env::start();
    let limits = QueueLimits {
        retention: 2 * SECOND,
        max_len: 10,
        max_deliveries: 0,
    };
    let store = DlqStore::new(&env, limits);
    let mut model = Queue::default();
    let t = EPOCH + 7;
    let m = Message {
        idempotency_key: "k1".into(),
        ..letter("r", b"once")
    };
    let (first, dup) = publish_both(&store, &mut model, &limits, &m, t);
    assert!(!dup);
    let mut at = |now: Micros| publish_both(&store, &mut model, &limits, &m, now);
    assert_eq!(at(t + limits.retention - 1), (first.clone(), true));
    let (second, dup) = at(t + limits.retention);
    assert!(!dup && second != first, "the key expired: a new entry");
    let (third, dup) = at(t + 2 * limits.retention - 1);
    assert_eq!((third, dup), (second, true));
    let s = store.stats(t + 2 * limits.retention);
    assert_eq!(
        (s.counters.published_total, s.counters.duplicates_total),
        (2, 2)
    );
    assert_same_state(
        &store,
        &model,
        t + 2 * limits.retention - 1,
        "after the keys",
    );
}
