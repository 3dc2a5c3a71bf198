//! [`ResilienceLayer`]: a [`Resilience`] policy as a tower layer around any service whose
//! requests can be cloned (each attempt sends a clone).
use std::{
    fmt,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{Resilience, ResilienceError};

/// Wraps services in a policy. Every pattern is also a layer on its own
/// (`Retry::into_layer`, `Timeout::into_layer`, `Bulkhead::into_layer`, ...): a policy
/// holding only it.
///
/// ```
/// use floodgate_client::resilience::{Resilience, ResilienceLayer, Retry};
/// let policy = Resilience::<String, std::io::Error>::builder()
///     .retry(Retry::new().max_attempts(2))
///     .build()
///     .unwrap();
/// let layer = ResilienceLayer::new(policy);
/// let svc = tower::Layer::layer(&layer, tower::service_fn(|name: String| async move {
///     Ok::<_, std::io::Error>(format!("hello {name}"))
/// }));
/// ```
pub struct ResilienceLayer<T, E> {
    policy: Resilience<T, E>,
}

impl<T, E> ResilienceLayer<T, E> {
    /// A layer running `policy`.
    pub fn new(policy: Resilience<T, E>) -> Self {
        Self { policy }
    }
}

impl<T, E> Clone for ResilienceLayer<T, E> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
        }
    }
}

impl<T, E> fmt::Debug for ResilienceLayer<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, T, E> Layer<S> for ResilienceLayer<T, E> {
    type Service = ResilienceService<S, T, E>;

    fn layer(&self, inner: S) -> Self::Service {
        ResilienceService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// A service behind a policy (made by [`ResilienceLayer`]).
///
/// ```
/// use floodgate_client::resilience::{Resilience, ResilienceLayer};
/// let policy = Resilience::<u32, std::io::Error>::builder().build().unwrap();
/// let svc = tower::Layer::layer(&ResilienceLayer::new(policy), tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x + 1)
/// }));
/// ```
pub struct ResilienceService<S, T, E> {
    inner: S,
    policy: Resilience<T, E>,
}

impl<S: Clone, T, E> Clone for ResilienceService<S, T, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S: fmt::Debug, T, E> fmt::Debug for ResilienceService<S, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceService")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<S, Req, T, E> Service<Req> for ResilienceService<S, T, E>
where
    S: Service<Req, Response = T, Error = E> + Clone + Send + 'static,
    S::Future: Send,
    Req: Clone + Send + 'static,
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Response = T;
    type Error = ResilienceError<E>;
    type Future = BoxFuture<'static, Result<T, ResilienceError<E>>>;

    /// Always ready: the inner service's readiness is awaited inside each attempt, so the
    /// attempt timeout and the bulkhead cover it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let policy = self.policy.clone();
        let svc = self.inner.clone();
        Box::pin(async move {
            policy
                .call(move || {
                    let mut s = svc.clone();
                    let req = req.clone();
                    async move {
                        futures::future::poll_fn(|cx| s.poll_ready(cx)).await?;
                        s.call(req).await
                    }
                })
                .await
        })
    }
}

/// Each pattern alone as a layer: a policy holding only it.
macro_rules! single_pattern_layer {
    ($ty:ty, $method:ident, $doc:literal) => {
        impl $ty {
            #[doc = $doc]
            pub fn into_layer<T, E>(self) -> Result<ResilienceLayer<T, E>, super::BuildError> {
                Ok(ResilienceLayer::new(
                    Resilience::builder().$method(self).build()?,
                ))
            }
        }
    };
}

single_pattern_layer!(
    super::Timeout,
    timeout,
    "These timeouts alone as a tower layer."
);
single_pattern_layer!(
    super::Bulkhead,
    bulkhead,
    "This bulkhead alone as a tower layer."
);
single_pattern_layer!(
    super::FleetBulkhead,
    fleet_bulkhead,
    "This fleet-wide bulkhead alone as a tower layer."
);
single_pattern_layer!(
    super::RateLimit,
    rate_limit,
    "This rate limit alone as a tower layer."
);
single_pattern_layer!(
    crate::Breaker,
    breaker,
    "This shared breaker alone as a tower layer."
);

impl<T, E> super::Retry<T, E> {
    /// This retry alone as a tower layer.
    ///
    /// ```
    /// use floodgate_client::resilience::Retry;
    /// let layer = Retry::<String, std::io::Error>::new().max_attempts(2).into_layer().unwrap();
    /// ```
    pub fn into_layer(self) -> Result<ResilienceLayer<T, E>, super::BuildError> {
        Ok(ResilienceLayer::new(
            Resilience::builder().retry(self).build()?,
        ))
    }
}

impl<T, E> super::Fallback<T, E> {
    /// This fallback alone as a tower layer.
    pub fn into_layer(self) -> Result<ResilienceLayer<T, E>, super::BuildError> {
        Ok(ResilienceLayer::new(
            Resilience::builder().fallback(self).build()?,
        ))
    }
}
