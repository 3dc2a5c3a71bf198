//! The fleet-wide bulkhead: a floodgate concurrency lease held for the call. The lease is
//! renewed while a long call runs, released when the call ends, is cancelled or panics
//! (a guard's `Drop`), and expires on the server if the process dies.
use std::{fmt, time::Duration};

use tokio::task::JoinHandle;

use crate::{
    Client, Decision, Error, PolicyRef,
    acquire::{MIN_WAIT_STEP, instant_after},
};

/// How often a caller waiting for a fleet-wide place asks again.
pub const LEASE_POLL: Duration = Duration::from_millis(50);

/// A fleet-wide bulkhead over a concurrency policy.
///
/// ```no_run
/// use std::time::Duration;
/// use floodgate_client::{Client, Policy, resilience::FleetBulkhead};
/// # async fn demo(client: Client) {
/// let b = FleetBulkhead::new(&client, "shop", "payments", Policy::concurrency(50)
///         .lease_ttl(Duration::from_secs(30)))
///     .renew_every(Duration::from_secs(10))
///     .max_wait(Duration::from_millis(200));
/// # }
/// ```
#[derive(Clone)]
pub struct FleetBulkhead {
    client: Client,
    namespace: String,
    key: String,
    policy: PolicyRef,
    pub(crate) renew_every: Duration,
    pub(crate) max_wait: Duration,
}

impl fmt::Debug for FleetBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBulkhead")
            .field("namespace", &self.namespace)
            .field("key", &self.key)
            .field("policy", &self.policy)
            .field("renew_every", &self.renew_every)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

/// A held lease; dropping it stops the renewals and releases the lease in the background.
/// A policy with a [`FleetBulkhead`] holds one per attempt; its id is what the server's
/// `Renew` and `Release` take.
///
/// ```no_run
/// # fn demo(lease: &floodgate_client::resilience::Lease) {
/// println!("holding lease {}", lease.id());
/// # }
/// ```
#[derive(Debug)]
pub struct Lease {
    client: Client,
    namespace: String,
    key: String,
    id: String,
    renew: Option<JoinHandle<()>>,
}

impl Lease {
    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the lease expires on the server
        };
        let (c, ns, key, id) = (
            self.client.clone(),
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.id),
        );
        rt.spawn(async move {
            let _ = c.release(&ns, &key, &id).await;
        });
    }
}

/// Why no lease was taken.
#[derive(Debug)]
pub(crate) enum Refused {
    Full(Duration),
    Floodgate(Error),
}

impl FleetBulkhead {
    /// At most `policy`'s limit of leases on `key` across the fleet. Renews every 20 s
    /// (the server's default lease lives 60 s), or every third of an inline policy's
    /// `lease_ttl` when that is shorter; no waiting.
    pub fn new(client: &Client, namespace: &str, key: &str, policy: impl Into<PolicyRef>) -> Self {
        let policy = policy.into();
        let renew_every = match lease_ttl(&policy) {
            Some(ttl) => (ttl / 3).min(Duration::from_secs(20)),
            None => Duration::from_secs(20),
        };
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            policy,
            renew_every,
            max_wait: Duration::ZERO,
        }
    }

    /// An inline policy's lease lifetime (unknown for a named one).
    pub(crate) fn lease_ttl(&self) -> Option<Duration> {
        lease_ttl(&self.policy)
    }

    /// How often a held lease is renewed (shorter than the lease's lifetime, which the
    /// builder checks for an inline policy; keep it well under).
    pub fn renew_every(mut self, d: Duration) -> Self {
        self.renew_every = d;
        self
    }

    /// How long to wait for a lease (asking again every [`LEASE_POLL`]).
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Takes a lease, waiting up to `max_wait`. A full concurrency policy's `retry_after` is
    /// when its oldest lease would expire, but leases are usually released sooner, so a
    /// waiting caller asks again every [`LEASE_POLL`] (never past `max_wait`).
    pub(crate) async fn enter(&self) -> Result<Lease, Refused> {
        let deadline = instant_after(self.max_wait);
        let d: Decision = loop {
            let d = self.ask().await.map_err(Refused::Floodgate)?;
            let wake = instant_after(d.retry_after.clamp(MIN_WAIT_STEP, LEASE_POLL));
            if d.allowed || wake > deadline {
                break d;
            }
            tokio::time::sleep_until(wake).await;
        };
        let id = match d.leases().next() {
            Some(id) if d.allowed => id.to_owned(),
            _ => return Err(Refused::Full(d.retry_after)),
        };
        let (c, ns, key, lease, every) = (
            self.client.clone(),
            self.namespace.clone(),
            self.key.clone(),
            id.clone(),
            self.renew_every.max(Duration::from_millis(10)),
        );
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(Error::NotFound(_)) = c.renew(&ns, &key, &lease, None).await {
                    return;
                }
            }
        });
        Ok(Lease {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            key: self.key.clone(),
            id,
            renew: Some(renew),
        })
    }

    /// One Acquire of a place, run as a task of its own: a caller cancelled while it is in
    /// flight (a timeout around the call, say) leaves it to finish in the background, and a
    /// lease it wins then is released at once instead of staying taken until its TTL.
    async fn ask(&self) -> Result<Decision, Error> {
        let acquire = self
            .client
            .acquire(&self.namespace)
            .check(self.key.clone(), self.policy.clone())
            .send();
        let mut asking = Asking {
            task: Some(tokio::spawn(acquire)),
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            key: self.key.clone(),
        };
        let task = asking.task.as_mut().expect("set above");
        let answer = task.await;
        asking.task = None;
        match answer {
            Ok(decided) => decided,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Unavailable(format!("the Acquire was stopped: {e}"))),
        }
    }
}

/// An Acquire of a place in flight; dropped before its answer, it releases what it won.
struct Asking {
    task: Option<JoinHandle<Result<Decision, Error>>>,
    client: Client,
    namespace: String,
    key: String,
}

impl Drop for Asking {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            task.abort();
            return; // no runtime: a lease it won expires on the server
        };
        let (c, ns, key) = (
            self.client.clone(),
            std::mem::take(&mut self.namespace),
            std::mem::take(&mut self.key),
        );
        rt.spawn(async move {
            let Ok(Ok(Ok(d))) = tokio::time::timeout(ABANDONED_ACQUIRE_WAIT, task).await else {
                return;
            };
            if d.allowed {
                for id in d.leases() {
                    let _ = c.release(&ns, &key, id).await;
                }
            }
        });
    }
}

/// How long an abandoned Acquire is still awaited in the background, to release a lease
/// it may win.
const ABANDONED_ACQUIRE_WAIT: Duration = Duration::from_secs(10);

fn lease_ttl(policy: &PolicyRef) -> Option<Duration> {
    match policy {
        PolicyRef::Inline(p) => p.0.lease_ttl.map(|d| crate::acquire::duration(Some(d))),
        PolicyRef::Named(_) => None,
    }
}
