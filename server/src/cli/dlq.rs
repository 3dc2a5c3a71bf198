//! `floodgate dlq stats|list|show|replay|redrive|archive|restore|purge`: what an operator
//! does with a dead-letter queue: look at it, replay entries through a command, move them
//! to a stream the application consumes, archive them, or delete them.
use std::{
    collections::{BTreeMap, HashSet},
    io::{IsTerminal, Write},
    os::fd::AsFd,
    process::{ExitCode, Stdio},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use floodgate_client::{
    Error,
    dead_letters::{DeadLetter, DeadLetterQueue, Filter, ListOptions, Stats},
};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::common::{ServerArgs, explain, human_duration, millis};

/// Arguments of `floodgate dlq`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Queues are configured on the server ([queues.NAME], or [queues.default] as the template
for any other name) and hold entries per namespace. Ids are Redis stream ids such as
1763870000123-0 (time-ordered).

Times (--since, --until) are RFC 3339 (2025-11-23T10:00:00Z) or an age such as 2h, 30m or
7d (that long ago).

Examples:
  floodgate dlq stats -n shop orders
  floodgate dlq list -n shop orders --reason payment_declined --since 2h --limit 20
  floodgate dlq list -n shop orders --meta tenant=acme --newest-first --json
  floodgate dlq show -n shop orders 1763870000123-0 --payload-out order.bin
  floodgate dlq replay -n shop orders --count 50 --exec './reprocess.sh'
  floodgate dlq redrive -n shop orders --target orders:retry --reason timeout
  floodgate dlq archive -n shop orders 1763870000123-0 1763870000456-0
  floodgate dlq purge -n shop orders --until 7d --yes")]
pub struct DlqArgs {
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Debug, clap::Subcommand)]
enum DlqAction {
    /// Print a queue's numbers: entries, in flight, archived, oldest age, by reason.
    Stats(QueueArgs),
    /// List entries (oldest first unless --newest-first), filtered.
    List(ListArgs),
    /// Print one entry with everything it keeps, payload included.
    Show(ShowArgs),
    /// Claim entries and run a command per entry: ack on exit 0, nack otherwise.
    Replay(ReplayArgs),
    /// Move matching entries to a stream the application consumes (one of the queue's
    /// redrive_targets).
    Redrive(RedriveArgs),
    /// Move entries to the queue's archive (kept, not claimable).
    Archive(IdsArgs),
    /// Move archived entries (by their archive ids) back into the queue.
    Restore(IdsArgs),
    /// Delete matching entries (asks first on a terminal unless --yes).
    Purge(PurgeArgs),
}

/// The queue to act on, and how to print.
#[derive(Debug, clap::Args)]
struct QueueArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The namespace (1-64 characters of [A-Za-z0-9_.-]).
    #[arg(long, short = 'n', env = "FLOODGATE_NAMESPACE")]
    namespace: String,
    /// The queue, e.g. orders.
    queue: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Which entries.
#[derive(Debug, Clone, Default, clap::Args)]
struct FilterArgs {
    /// Only this exact reason.
    #[arg(long)]
    reason: Option<String>,
    /// Only entries with this metadata pair (repeat for several; all must match).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Published at or after: RFC 3339 or an age such as 2h.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<SystemTime>,
    /// Published before: RFC 3339 or an age such as 30m.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<SystemTime>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            reason: self.reason.clone(),
            metadata: self.meta.iter().cloned().collect(),
            since: self.since,
            until: self.until,
        }
    }

    fn is_empty(&self) -> bool {
        self.reason.is_none()
            && self.meta.is_empty()
            && self.since.is_none()
            && self.until.is_none()
    }
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Newest entries first.
    #[arg(long)]
    newest_first: bool,
    /// List the archive instead of the queue.
    #[arg(long)]
    archived: bool,
    /// Entries to print at most; 0 prints every matching entry.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Include payloads (JSON output only).
    #[arg(long)]
    payloads: bool,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The entry's id (an archive id for archived entries).
    id: String,
    /// Write the raw payload bytes to this file.
    #[arg(long, value_name = "FILE")]
    payload_out: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The command runs with `sh -c`, the payload on its standard input and the entry in
environment variables: FLOODGATE_DLQ_ID, _NAMESPACE, _QUEUE, _REASON, _ERROR_CLASS,
_SOURCE, _ATTEMPTS, _DELIVERY_COUNT, _TRACE_ID, _PUBLISHED_AT, _FIRST_FAILED_AT,
_METADATA (a JSON object) and FLOODGATE_DLQ_META_<KEY> per metadata pair (KEY upper-cased,
other characters than A-Z and 0-9 as _). Its standard output goes to our standard error.

Exit 0 acks the entry (removed); anything else nacks it when the run ends (claimable
again). Entries stay claimed for --visibility, which should cover the whole run.")]
struct ReplayArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The command to run per entry.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Entries to replay at most; 0: every entry claimable now.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// How long the claimed entries stay hidden from other consumers.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    visibility: Duration,
    /// The consumer name shown in server logs.
    #[arg(long)]
    consumer: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RedriveArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// The Redis stream to copy the entries to (one of the queue's redrive_targets).
    #[arg(long, value_name = "STREAM")]
    target: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Entries to move at most; 0 moves every matching entry.
    #[arg(long, default_value_t = 0)]
    limit: u64,
}

#[derive(Debug, clap::Args)]
struct IdsArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Entry ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PurgeArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Purge the archive instead of the queue.
    #[arg(long)]
    archived: bool,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Runs `floodgate dlq`.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        DlqAction::Stats(a) => stats(a).await,
        DlqAction::List(a) => list(a).await,
        DlqAction::Show(a) => show(a).await,
        DlqAction::Replay(a) => replay(a).await,
        DlqAction::Redrive(a) => redrive(a).await,
        DlqAction::Archive(a) => archive(a, true).await,
        DlqAction::Restore(a) => archive(a, false).await,
        DlqAction::Purge(a) => purge(a).await,
    }
}

/// Server field paths and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("namespace", "--namespace"),
    ("queue", "QUEUE"),
    ("filter.reason", "--reason"),
    ("filter.metadata", "--meta"),
    ("filter.since", "--since"),
    ("filter.until", "--until"),
    ("target_stream", "--target"),
    ("consumer", "--consumer"),
    ("visibility_timeout", "--visibility"),
    ("count", "--count"),
    ("id", "ID"),
    ("ids", "ID"),
];

impl QueueArgs {
    async fn connect(&self) -> anyhow::Result<DeadLetterQueue> {
        let client = self.server.connect().await?;
        Ok(client.dead_letters(&self.namespace, &self.queue))
    }

    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.queue)
    }

    /// One call with the `--timeout` deadline (at least `min`), errors explained.
    async fn call<T>(
        &self,
        min: Duration,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> anyhow::Result<T> {
        let timeout = self.server.timeout.max(min);
        let url = self.server.url();
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(Error::NotFound(m))) if m.starts_with("queue") => Err(anyhow::anyhow!(
                "not found: {m}\nhint: configure the queue on the server ([queues.{}], or \
                 [queues.default] as the template for any name) and reload it",
                self.queue
            )),
            Ok(Err(Error::NotFound(m))) => Err(anyhow::anyhow!(
                "not found: {m}\nhint: `floodgate dlq list -n {} {}` shows what is there \
                 (--archived: the archive; archived entries have new ids)",
                self.namespace,
                self.queue
            )),
            Ok(Err(Error::PermissionDenied(m))) => Err(anyhow::anyhow!(
                "the server refused: {m}\nhint: check the token's namespace and role"
            )),
            Ok(Err(e)) => Err(explain(&url, &e, FLAGS)),
            Err(_) => Err(anyhow::anyhow!(
                "{url} did not answer within {}\nhint: the server or its store may be \
                 overloaded; retry, or raise --timeout",
                human_duration(timeout)
            )),
        }
    }
}

/// `KEY=VALUE`.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, e.g. tenant=acme; got {s:?}")),
    }
}

/// RFC 3339 (`2025-11-23T10:00:00Z`), or an age (`2h`, `2h ago`) counted back from now.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    parse_time_at(s, SystemTime::now())
}

fn parse_time_at(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let age = s.strip_suffix("ago").unwrap_or(s).trim();
    match humantime::parse_duration(age) {
        Ok(d) => now
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} is before 1970")),
        Err(_) => Err(format!(
            "expected an RFC 3339 time (2025-11-23T10:00:00Z) or an age such as 2h or 30m; \
             got {s:?}"
        )),
    }
}

fn time_text(t: Option<SystemTime>) -> String {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "-".into())
}

fn time_json(t: Option<SystemTime>) -> Value {
    t.map(|t| Value::String(humantime::format_rfc3339_millis(t).to_string()))
        .unwrap_or(Value::Null)
}

/// The payload as text when it is UTF-8, else base64: `(encoding, text)`.
pub fn payload_text(p: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(p) {
        Ok(s) => ("utf8", s.to_owned()),
        Err(_) => ("base64", base64(p)),
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn entry_json(d: &DeadLetter, with_payload: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "reason": d.reason,
        "error_class": d.error_class,
        "source": d.source,
        "attempts": d.attempts,
        "metadata": d.metadata,
        "trace_id": d.trace_id,
        "first_failed_at": time_json(d.first_failed_at),
        "published_at": time_json(d.published_at),
        "delivery_count": d.delivery_count,
        "archived": d.archived,
        "original_id": d.original_id,
        "payload_size": d.payload_size,
        "idempotency_key": d.idempotency_key,
    });
    if with_payload && let Some(o) = v.as_object_mut() {
        let (encoding, text) = payload_text(&d.payload);
        o.insert("payload".into(), text.into());
        o.insert("payload_encoding".into(), encoding.into());
    }
    v
}

fn stats_json(q: &QueueArgs, s: &Stats) -> Value {
    json!({
        "namespace": q.namespace,
        "queue": q.queue,
        "count": s.count,
        "in_flight": s.in_flight,
        "archived": s.archived,
        "oldest_age_ms": millis(s.oldest_age),
        "published_last_hour": s.published_last_hour,
        "over_threshold": s.over_threshold,
        "published_total": s.published_total,
        "duplicates_total": s.duplicates_total,
        "trimmed_by_age": s.trimmed_by_age,
        "trimmed_by_length": s.trimmed_by_length,
        "by_reason": s.by_reason,
    })
}

async fn stats(q: QueueArgs) -> anyhow::Result<ExitCode> {
    let queue = q.connect().await?;
    let s = q.call(Duration::ZERO, queue.stats()).await?;
    if q.json {
        println!("{}", stats_json(&q, &s));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} in {}", q.queue, q.namespace);
    println!(
        "  entries     {}{}",
        s.count,
        if s.over_threshold {
            " (OVER the alert threshold)"
        } else {
            ""
        }
    );
    println!("  in flight   {} (claimed, not yet acked)", s.in_flight);
    println!("  archived    {}", s.archived);
    println!(
        "  oldest      {}",
        if s.count == 0 {
            "-".to_owned()
        } else {
            human_duration(s.oldest_age)
        }
    );
    println!("  last hour   {} published", s.published_last_hour);
    println!(
        "  totals      {} published, {} duplicates",
        s.published_total, s.duplicates_total
    );
    println!(
        "  trimmed     {} by age (retention), {} by length (max_len)",
        s.trimmed_by_age, s.trimmed_by_length
    );
    if !s.by_reason.is_empty() {
        println!("by reason");
        let mut rows: Vec<_> = s.by_reason.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let width = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(0).max(8);
        for (reason, n) in rows {
            let reason = if reason.is_empty() { "(none)" } else { reason };
            println!("  {reason:<width$}  {n:>8}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` cut to `n` characters, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn meta_text(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let queue = q.connect().await?;
    let page_size = if a.limit == 0 {
        1_000
    } else {
        a.limit.min(1_000) as u32
    };
    let options = ListOptions::new()
        .filter(a.filter.filter())
        .newest_first(a.newest_first)
        .archived(a.archived)
        .include_payload(a.payloads && q.json)
        .page_size(page_size);
    let mut stream = queue.list(options);
    let mut json_rows = Vec::new();
    let mut n = 0u64;
    while a.limit == 0 || n < a.limit {
        let Some(d) = q.call(Duration::ZERO, stream.try_next()).await? else {
            break;
        };
        n += 1;
        if n == 1 && !q.json {
            println!(
                "{:<20} {:<20} {:<20} {:<16} {:>4} {:>4} {:>9}  METADATA",
                "ID", "PUBLISHED", "REASON", "SOURCE", "ATT", "DLV", "BYTES"
            );
        }
        if q.json {
            json_rows.push(entry_json(&d, a.payloads));
        } else {
            println!(
                "{:<20} {:<20} {:<20} {:<16} {:>4} {:>4} {:>9}  {}",
                d.id,
                time_text(d.published_at),
                cut(&d.reason, 20),
                cut(&d.source, 16),
                d.attempts,
                d.delivery_count,
                d.payload_size,
                cut(&meta_text(&d.metadata), 60)
            );
        }
    }
    // Is there more than was printed?
    let more = a.limit > 0 && n == a.limit && {
        matches!(q.call(Duration::ZERO, stream.try_next()).await, Ok(Some(_)))
    };
    if q.json {
        println!(
            "{}",
            json!({
                "namespace": q.namespace,
                "queue": q.queue,
                "archived": a.archived,
                "messages": json_rows,
                "count": n,
                "more": more,
            })
        );
    } else if n == 0 {
        println!(
            "(no {}entries{})",
            if a.archived { "archived " } else { "" },
            if a.filter.is_empty() {
                ""
            } else {
                " match the filter"
            }
        );
    } else if more {
        println!("({n} shown; there are more: raise --limit, or --limit 0 for all)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let queue = q.connect().await?;
    let d = q.call(Duration::ZERO, queue.get(&a.id)).await?;
    if let Some(path) = &a.payload_out {
        std::fs::write(path, &d.payload)
            .with_context(|| format!("cannot write the payload to {}", path.display()))?;
    }
    if q.json {
        println!("{}", entry_json(&d, true));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} in {}{}",
        d.id,
        q.name(),
        if d.archived { " (archived)" } else { "" }
    );
    if d.archived && !d.original_id.is_empty() {
        println!("  original id      {}", d.original_id);
    }
    println!("  reason           {}", d.reason);
    println!("  error class      {}", d.error_class);
    println!("  source           {}", d.source);
    println!("  attempts         {}", d.attempts);
    println!("  deliveries       {}", d.delivery_count);
    println!("  first failed at  {}", time_text(d.first_failed_at));
    println!("  published at     {}", time_text(d.published_at));
    println!("  trace id         {}", d.trace_id);
    println!("  idempotency key  {}", d.idempotency_key);
    if d.metadata.is_empty() {
        println!("  metadata         (none)");
    } else {
        println!("  metadata");
        for (k, v) in &d.metadata {
            println!("    {k} = {v}");
        }
    }
    let (encoding, text) = payload_text(&d.payload);
    match encoding {
        "utf8" => println!("payload ({} bytes, UTF-8)", d.payload.len()),
        _ => println!(
            "payload ({} bytes, not UTF-8: shown as base64; --payload-out FILE writes the raw \
             bytes)",
            d.payload.len()
        ),
    }
    println!("{text}");
    if let Some(path) = &a.payload_out {
        eprintln!("wrote {} bytes to {}", d.payload.len(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on standard error when it is a terminal (and the output is not JSON),
/// hidden otherwise.
fn progress(len: Option<u64>, json: bool, message: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// `FLOODGATE_DLQ_META_` + the key upper-cased, other characters as `_`.
pub fn meta_env_name(key: &str) -> String {
    let k: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FLOODGATE_DLQ_META_{k}")
}

/// Runs `cmd` for one entry; `Ok(exit code)` (-1 when killed by a signal).
async fn run_command(cmd: &str, q: &QueueArgs, d: &DeadLetter) -> anyhow::Result<i32> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    let env = [
        ("FLOODGATE_DLQ_ID", d.id.clone()),
        ("FLOODGATE_DLQ_NAMESPACE", q.namespace.clone()),
        ("FLOODGATE_DLQ_QUEUE", q.queue.clone()),
        ("FLOODGATE_DLQ_REASON", d.reason.clone()),
        ("FLOODGATE_DLQ_ERROR_CLASS", d.error_class.clone()),
        ("FLOODGATE_DLQ_SOURCE", d.source.clone()),
        ("FLOODGATE_DLQ_ATTEMPTS", d.attempts.to_string()),
        ("FLOODGATE_DLQ_DELIVERY_COUNT", d.delivery_count.to_string()),
        ("FLOODGATE_DLQ_TRACE_ID", d.trace_id.clone()),
        ("FLOODGATE_DLQ_PUBLISHED_AT", time_text(d.published_at)),
        (
            "FLOODGATE_DLQ_FIRST_FAILED_AT",
            time_text(d.first_failed_at),
        ),
        ("FLOODGATE_DLQ_METADATA", json!(d.metadata).to_string()),
    ];
    c.envs(env);
    for (k, v) in &d.metadata {
        c.env(meta_env_name(k), v);
    }
    // The command's output goes to our standard error, so ours stays clean for --json.
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run `sh -c {cmd:?}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine (broken pipe).
        let _ = stdin.write_all(&d.payload).await;
        drop(stdin);
    }
    let status = child.wait().await.context("waiting for the command")?;
    Ok(status.code().unwrap_or(-1))
}

async fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let queue = q.connect().await?;
    let consumer = a
        .consumer
        .clone()
        .unwrap_or_else(|| format!("floodgate-cli-{}", std::process::id()));
    let bar = progress((a.count > 0).then_some(a.count), q.json, "replaying");
    let mut seen = HashSet::new();
    let mut failed: Vec<String> = Vec::new();
    let mut results = Vec::new();
    let (mut acked, mut archived_over_max) = (0u64, 0u64);
    'run: loop {
        let left = if a.count == 0 {
            100
        } else {
            (a.count - seen.len() as u64).min(100)
        };
        if left == 0 {
            break;
        }
        let claimed = q
            .call(
                Duration::ZERO,
                queue.claim(&consumer, left as u32, Some(a.visibility)),
            )
            .await?;
        archived_over_max += u64::from(claimed.archived_over_max_deliveries);
        // Entries seen before came back (their claim expired): the run is over.
        let fresh: Vec<_> = claimed
            .messages
            .into_iter()
            .filter(|d| !seen.contains(&d.id))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for d in fresh {
            seen.insert(d.id.clone());
            let code = match run_command(&a.exec, q, &d).await {
                Ok(c) => c,
                Err(e) => {
                    failed.push(d.id.clone());
                    bar.finish_and_clear();
                    // Give back what we hold before failing.
                    let _ = queue.nack(failed.clone()).await;
                    return Err(e);
                }
            };
            if code == 0 {
                acked += q.call(Duration::ZERO, queue.ack([d.id.clone()])).await?;
            } else {
                failed.push(d.id.clone());
            }
            let line = if code == 0 {
                format!("ok    {}", d.id)
            } else {
                format!("FAIL  {} (exit {code})", d.id)
            };
            if !q.json {
                bar.suspend(|| eprintln!("{line}"));
            }
            results.push(json!({"id": d.id, "exit_code": code, "acked": code == 0}));
            bar.inc(1);
            if a.count > 0 && seen.len() as u64 >= a.count {
                break 'run;
            }
        }
    }
    let nacked = if failed.is_empty() {
        0
    } else {
        q.call(Duration::ZERO, queue.nack(failed.clone())).await?
    };
    bar.finish_and_clear();
    if q.json {
        println!(
            "{}",
            json!({
                "namespace": q.namespace,
                "queue": q.queue,
                "replayed": seen.len(),
                "acked": acked,
                "failed": failed.len(),
                "nacked": nacked,
                "archived_over_max_deliveries": archived_over_max,
                "results": results,
            })
        );
    } else if seen.is_empty() {
        println!("nothing to replay: {} has no claimable entries", q.name());
    } else {
        println!(
            "replayed {} entries of {}: {acked} acked, {} failed (nacked: claimable again)",
            seen.len(),
            q.name(),
            failed.len()
        );
    }
    if archived_over_max > 0 && !q.json {
        println!(
            "{archived_over_max} entries reached max_deliveries and were archived instead \
             (`floodgate dlq list --archived`)"
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn redrive(a: RedriveArgs) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let queue = q.connect().await?;
    let filter = a.filter.filter();
    let bar = progress((a.limit > 0).then_some(a.limit), q.json, "redriving");
    // Batches of 1,000 (the server's script batch), so progress shows and each call stays
    // short.
    let mut moved = 0u64;
    loop {
        let want = if a.limit == 0 {
            1_000
        } else {
            (a.limit - moved).min(1_000)
        };
        if want == 0 {
            break;
        }
        let n = q
            .call(
                Duration::from_secs(60),
                queue.redrive(&a.target, &filter, want),
            )
            .await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                bar.finish_and_clear();
                if moved > 0 {
                    eprintln!(
                        "{moved} entries were moved to {} before the error",
                        a.target
                    );
                }
                return Err(e);
            }
        };
        moved += n;
        bar.set_position(moved);
        if n < want {
            break;
        }
    }
    bar.finish_and_clear();
    if q.json {
        println!(
            "{}",
            json!({"namespace": q.namespace, "queue": q.queue, "target": a.target, "moved": moved})
        );
    } else {
        println!(
            "moved {moved} entries from {} to stream {}",
            q.name(),
            a.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn archive(a: IdsArgs, archive: bool) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let queue = q.connect().await?;
    if archive {
        let n = q
            .call(Duration::from_secs(30), queue.archive(a.ids.clone()))
            .await?;
        if q.json {
            println!(
                "{}",
                json!({"namespace": q.namespace, "queue": q.queue, "requested": a.ids.len(), "archived": n})
            );
        } else {
            println!(
                "archived {n} of {} entries of {}{}",
                a.ids.len(),
                q.name(),
                if n < a.ids.len() as u64 {
                    " (the others were not in the queue)"
                } else {
                    ""
                }
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let new_ids = q
        .call(Duration::from_secs(30), queue.restore(a.ids.clone()))
        .await?;
    let restored = new_ids.iter().filter(|i| i.is_some()).count();
    if q.json {
        let pairs: Vec<_> = a
            .ids
            .iter()
            .zip(&new_ids)
            .map(|(old, new)| json!({"archive_id": old, "id": new}))
            .collect();
        println!(
            "{}",
            json!({"namespace": q.namespace, "queue": q.queue, "restored": restored, "ids": pairs})
        );
    } else {
        for (old, new) in a.ids.iter().zip(&new_ids) {
            match new {
                Some(id) => println!("{old} -> {id}"),
                None => println!("{old}: not in the archive"),
            }
        }
        println!(
            "restored {restored} of {} entries to {}",
            a.ids.len(),
            q.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let q = &a.queue;
    let what = format!(
        "{} {}",
        if a.filter.is_empty() {
            "every"
        } else {
            "the matching"
        },
        if a.archived {
            format!("archived entry of {}", q.name())
        } else {
            format!("entry of {}", q.name())
        }
    );
    if !a.yes && !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to purge {what} without confirmation: standard input is not a terminal\n\
             hint: pass --yes to purge without asking"
        );
    }
    let queue = q.connect().await?;
    if !a.yes {
        let s = q.call(Duration::ZERO, queue.stats()).await?;
        let held = if a.archived { s.archived } else { s.count };
        eprint!("Delete {what} ({held} entries there now)? This cannot be undone. [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("nothing purged");
            return Ok(ExitCode::FAILURE);
        }
    }
    let bar = progress(None, q.json, "purging");
    let r = q
        .call(
            Duration::from_secs(300),
            queue.purge(&a.filter.filter(), a.archived),
        )
        .await;
    bar.finish_and_clear();
    let purged = r?;
    if q.json {
        println!(
            "{}",
            json!({"namespace": q.namespace, "queue": q.queue, "archived": a.archived, "purged": purged})
        );
    } else {
        println!(
            "purged {purged} {}entries of {}",
            if a.archived { "archived " } else { "" },
            q.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_time_at("2h", now).unwrap(),
            now - Duration::from_secs(7_200)
        );
        assert_eq!(
            parse_time_at("30m ago", now).unwrap(),
            now - Duration::from_secs(1_800)
        );
        assert_eq!(
            parse_time_at("1970-01-02T00:00:00Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(86_400)
        );
        assert!(
            parse_time_at("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn meta_pairs_and_env_names() {
        assert_eq!(
            parse_meta("tenant=acme=1").unwrap(),
            ("tenant".into(), "acme=1".into())
        );
        assert_eq!(parse_meta("k=").unwrap(), ("k".into(), String::new()));
        assert!(parse_meta("=v").is_err());
        assert!(parse_meta("novalue").is_err());
        assert_eq!(
            meta_env_name("tenant-id.x"),
            "FLOODGATE_DLQ_META_TENANT_ID_X"
        );
    }

    #[test]
    fn payloads_print_as_text_or_base64() {
        assert_eq!(payload_text("héllo".as_bytes()), ("utf8", "héllo".into()));
        assert_eq!(payload_text(&[0xff, 0, 1]), ("base64", "/wAB".into()));
        for (raw, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), want);
        }
    }

    #[test]
    fn cut_marks_what_it_cuts() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a long reason", 6), "a lon…");
    }
}
