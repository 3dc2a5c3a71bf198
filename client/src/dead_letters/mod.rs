//! Dead-letter queues: [`DeadLetterQueue`] handles from [`crate::Client::dead_letters`].
//!
//! The model: an application [`publish`](DeadLetterQueue::publish)es a message that failed
//! for good; people and tools inspect the queue ([`list`](DeadLetterQueue::list),
//! [`get`](DeadLetterQueue::get), [`stats`](DeadLetterQueue::stats)); it is replayed by a
//! [`Consumer`] (claim, handle, ack on success, nack on failure) or moved in bulk into a
//! stream the application consumes ([`redrive`](DeadLetterQueue::redrive)).
//!
//! ```no_run
//! use floodgate_client::{Client, dead_letters::{Message, Filter, ListOptions}};
//! use futures::TryStreamExt;
//!
//! # async fn demo() -> Result<(), floodgate_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let orders = client.dead_letters("shop", "orders");
//! let p = orders
//!     .publish(Message::new(b"{\"order\":42}".to_vec()).reason("payment_declined"))
//!     .await?;
//! println!("stored as {} (duplicate: {})", p.id, p.duplicate);
//! let mut all = orders.list(ListOptions::new().filter(Filter::all().reason("payment_declined")));
//! while let Some(entry) = all.try_next().await? {
//!     println!("{} {}", entry.id, entry.reason);
//! }
//! # Ok(()) }
//! ```
//!
//! Layout:
//! - [`types`]: [`Message`], [`Published`], [`DeadLetter`], [`Filter`], [`ListOptions`],
//!   [`Page`], [`Stats`], [`Claimed`].
//! - [`retry`]: [`RetryPolicy`], how `publish` retries.
//! - [`consumer`]: [`Consumer`], the claim / handle / ack-or-nack loop.
use std::{collections::VecDeque, time::Duration};

use crate::AuthChannel;
use floodgate_proto::v1::{self as pb, dead_letters_client::DeadLettersClient};
use futures::{StreamExt, stream::BoxStream};

use crate::{Error, policy::wire_duration};

pub mod consumer;
pub mod retry;
pub mod types;

pub use consumer::{Consumer, ConsumerReport};
pub use retry::RetryPolicy;
pub use types::{Claimed, DeadLetter, Filter, ListOptions, Message, Page, Published, Stats};

/// The client's receive limit for dead-letter calls: a page the server keeps under its 4 MiB
/// budget (plus framing) always fits.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 8 << 20;

/// Ids per Ack, Nack, Archive and Restore call (the server's limit); longer lists are sent
/// in several calls.
pub const MAX_IDS_PER_CALL: usize = 1_000;

/// A handle on one queue of one namespace. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    grpc: DeadLettersClient<AuthChannel>,
    namespace: String,
    queue: String,
    retry: RetryPolicy,
}

impl DeadLetterQueue {
    pub(crate) fn new(channel: AuthChannel, namespace: &str, queue: &str) -> Self {
        let grpc = DeadLettersClient::new(channel)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        Self {
            grpc,
            namespace: namespace.to_owned(),
            queue: queue.to_owned(),
            retry: RetryPolicy::default(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// How [`publish`](Self::publish) retries (default: [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated client (receive limit raised), for anything this handle does not
    /// cover.
    pub fn grpc(&self) -> DeadLettersClient<AuthChannel> {
        self.grpc.clone()
    }

    /// Stores `message`. Without an idempotency key a random one is generated; a call that
    /// fails with UNAVAILABLE, a transport error or a deadline is retried with the same key
    /// (backing off, until the [`RetryPolicy`] deadline), so the message is stored once.
    pub async fn publish(&self, message: Message) -> Result<Published, Error> {
        let key = message
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let request = message.to_request(&self.namespace, &self.queue, &key);
        let mut attempts = 0;
        let r = self
            .retry
            .run(|| {
                attempts += 1;
                let mut grpc = self.grpc.clone();
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(self.retry.attempt_timeout);
                async move { Ok(grpc.publish(req).await?.into_inner()) }
            })
            .await?;
        Ok(Published {
            id: r.id,
            duplicate: r.duplicate,
            idempotency_key: key,
            attempts,
        })
    }

    /// One entry with its payload (the archive included); [`Error::NotFound`] when gone.
    pub async fn get(&self, id: &str) -> Result<DeadLetter, Error> {
        let r = self
            .grpc
            .clone()
            .get(pb::GetDeadLetterRequest {
                namespace: self.namespace.clone(),
                queue: self.queue.clone(),
                id: id.to_owned(),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// The queue's numbers.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let r = self
            .grpc
            .clone()
            .stats(pb::StatsRequest {
                namespace: self.namespace.clone(),
                queue: self.queue.clone(),
            })
            .await?;
        Ok(r.into_inner().into())
    }

    /// One page: pass `None` to start, then the previous page's `next_cursor`.
    pub async fn list_page(
        &self,
        options: &ListOptions,
        cursor: Option<&str>,
    ) -> Result<Page, Error> {
        let r = self
            .grpc
            .clone()
            .list(list_request(self, options, cursor.unwrap_or_default()))
            .await?
            .into_inner();
        Ok(Page {
            messages: r.messages.into_iter().map(Into::into).collect(),
            next_cursor: Some(r.next_cursor).filter(|c| !c.is_empty()),
        })
    }

    /// Every matching entry, page by page as the stream is read (each page fetched when
    /// the previous one is used up). Ends after the last page; yields an error and ends
    /// when a call fails.
    pub fn list(
        &self,
        options: impl Into<ListOptions>,
    ) -> BoxStream<'static, Result<DeadLetter, Error>> {
        let state = ListState {
            queue: self.clone(),
            options: options.into(),
            cursor: Some(String::new()),
            buffer: VecDeque::new(),
        };
        futures::stream::try_unfold(state, |mut s| async move {
            loop {
                if let Some(d) = s.buffer.pop_front() {
                    return Ok(Some((d, s)));
                }
                let Some(cursor) = s.cursor.take() else {
                    return Ok(None);
                };
                let cursor_arg = Some(cursor.as_str()).filter(|c| !c.is_empty());
                let page = s.queue.list_page(&s.options, cursor_arg).await?;
                if let Some(next) = &page.next_cursor
                    && page.messages.is_empty()
                    && *next == cursor
                {
                    return Err(Error::Status(tonic::Status::internal(format!(
                        "List returned an empty page with the cursor it was given ({next:?})"
                    ))));
                }
                s.cursor = page.next_cursor;
                s.buffer.extend(page.messages);
            }
        })
        .boxed()
    }

    /// Hands out up to `count` entries (1-1,000) to `consumer` for `visibility` (`None`:
    /// the queue's `visibility_timeout`): first those whose earlier claim expired, then
    /// never-delivered ones. Ack or nack each.
    pub async fn claim(
        &self,
        consumer: &str,
        count: u32,
        visibility: Option<Duration>,
    ) -> Result<Claimed, Error> {
        let r = self
            .grpc
            .clone()
            .claim(pb::ClaimRequest {
                namespace: self.namespace.clone(),
                queue: self.queue.clone(),
                consumer: consumer.to_owned(),
                count,
                visibility_timeout: visibility.map(wire_duration),
            })
            .await?
            .into_inner();
        Ok(Claimed {
            messages: r.messages.into_iter().map(Into::into).collect(),
            archived_over_max_deliveries: r.archived_over_max_deliveries,
        })
    }

    /// Removes handled entries; returns how many were in the queue.
    pub async fn ack<I>(&self, ids: I) -> Result<u64, Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut n = 0;
        for chunk in chunks(ids) {
            let r = self
                .grpc
                .clone()
                .ack(pb::AckRequest {
                    namespace: self.namespace.clone(),
                    queue: self.queue.clone(),
                    ids: chunk,
                })
                .await?;
            n += u64::from(r.into_inner().acked);
        }
        Ok(n)
    }

    /// Makes claimed entries claimable again now; returns how many were claimed.
    pub async fn nack<I>(&self, ids: I) -> Result<u64, Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut n = 0;
        for chunk in chunks(ids) {
            let r = self
                .grpc
                .clone()
                .nack(pb::NackRequest {
                    namespace: self.namespace.clone(),
                    queue: self.queue.clone(),
                    ids: chunk,
                })
                .await?;
            n += u64::from(r.into_inner().released);
        }
        Ok(n)
    }

    /// Copies matching entries (at most `limit`; 0: all) to `target_stream`, which must be
    /// in the queue's `redrive_targets`, then removes them; returns how many moved.
    pub async fn redrive(
        &self,
        target_stream: &str,
        filter: &Filter,
        limit: u64,
    ) -> Result<u64, Error> {
        let r = self
            .grpc
            .clone()
            .redrive(pb::RedriveRequest {
                namespace: self.namespace.clone(),
                queue: self.queue.clone(),
                target_stream: target_stream.to_owned(),
                filter: Some(filter.to_proto()),
                limit,
            })
            .await?;
        Ok(r.into_inner().moved)
    }

    /// Moves entries to the archive; returns how many moved.
    pub async fn archive<I>(&self, ids: I) -> Result<u64, Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut n = 0;
        for chunk in chunks(ids) {
            let r = self
                .grpc
                .clone()
                .archive(pb::ArchiveRequest {
                    namespace: self.namespace.clone(),
                    queue: self.queue.clone(),
                    ids: chunk,
                })
                .await?;
            n += u64::from(r.into_inner().archived);
        }
        Ok(n)
    }

    /// Moves archived entries (by archive id) back into the queue; returns their new ids in
    /// order, `None` for ids that were not in the archive.
    pub async fn restore<I>(&self, ids: I) -> Result<Vec<Option<String>>, Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut out = Vec::new();
        for chunk in chunks(ids) {
            let r = self
                .grpc
                .clone()
                .restore(pb::RestoreRequest {
                    namespace: self.namespace.clone(),
                    queue: self.queue.clone(),
                    ids: chunk,
                })
                .await?;
            out.extend(
                r.into_inner()
                    .ids
                    .into_iter()
                    .map(|id| Some(id).filter(|id| !id.is_empty())),
            );
        }
        Ok(out)
    }

    /// Deletes matching entries (from the archive when `archived`); returns how many.
    pub async fn purge(&self, filter: &Filter, archived: bool) -> Result<u64, Error> {
        let r = self
            .grpc
            .clone()
            .purge(pb::PurgeRequest {
                namespace: self.namespace.clone(),
                queue: self.queue.clone(),
                filter: Some(filter.to_proto()),
                archived,
            })
            .await?;
        Ok(r.into_inner().purged)
    }

    /// A [`Consumer`] named `name` on this queue (tune it, then [`Consumer::run`]).
    pub fn consumer(&self, name: &str) -> Consumer {
        Consumer::new(self.clone(), name)
    }

    /// Runs a default [`Consumer`] named `name` with `handler` until `shutdown` completes;
    /// see [`Consumer::run`].
    pub async fn consume<H, Fut, E>(
        &self,
        name: &str,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerReport, Error>
    where
        H: Fn(DeadLetter) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        self.consumer(name).run(handler, shutdown).await
    }
}

struct ListState {
    queue: DeadLetterQueue,
    options: ListOptions,
    /// `None` once the last page was fetched; `Some("")` before the first.
    cursor: Option<String>,
    buffer: VecDeque<DeadLetter>,
}

fn list_request(q: &DeadLetterQueue, o: &ListOptions, cursor: &str) -> pb::ListDeadLettersRequest {
    pb::ListDeadLettersRequest {
        namespace: q.namespace.clone(),
        queue: q.queue.clone(),
        filter: Some(o.filter.to_proto()),
        page_size: o.page_size,
        cursor: cursor.to_owned(),
        newest_first: o.newest_first,
        include_payload: o.include_payload,
        archived: o.archived,
    }
}

/// Ids in chunks of at most [`MAX_IDS_PER_CALL`]; no chunk for no ids.
fn chunks<I>(ids: I) -> Vec<Vec<String>>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
    ids.chunks(MAX_IDS_PER_CALL)
        .map(<[String]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sent_in_chunks_of_at_most_1000() {
        assert!(chunks(Vec::<String>::new()).is_empty());
        assert_eq!(chunks(["a"]), vec![vec!["a".to_owned()]]);
        let many: Vec<String> = (0..2_001).map(|i| format!("{i}-0")).collect();
        let c = chunks(many.clone());
        assert_eq!(
            c.iter().map(Vec::len).collect::<Vec<_>>(),
            [1_000, 1_000, 1]
        );
        assert_eq!(c.concat(), many);
    }
}
