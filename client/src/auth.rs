//! [`AuthChannel`]: a channel that sends a bearer token (`authorization: Bearer <token>`)
//! with every call; without a token it is the bare channel.
use std::task::{Context, Poll};

use tonic::{
    body::Body,
    transport::{Channel, channel::ResponseFuture},
};

use crate::Error;

/// A [`Channel`] that adds the `authorization` metadata to every request. Generated
/// clients take it like a channel: `RateLimiterClient::new(auth_channel)`.
#[derive(Debug, Clone)]
pub struct AuthChannel {
    /// The connection.
    inner: Channel,
    /// `Bearer <token>`, when a token is set.
    header: Option<http::HeaderValue>,
}

impl AuthChannel {
    /// `channel` without a token.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: channel,
            header: None,
        }
    }

    /// The same channel sending `token` with every call. A token with characters that
    /// cannot be metadata (not visible ASCII) is an [`Error::InvalidToken`].
    pub fn with_token(self, token: &str) -> Result<Self, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidToken("the token is empty".into()));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::InvalidToken(
                "a token is visible ASCII without spaces".into(),
            ));
        }
        let mut header: http::HeaderValue = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::InvalidToken("a token is visible ASCII without spaces".into()))?;
        header.set_sensitive(true);
        Ok(Self {
            inner: self.inner,
            header: Some(header),
        })
    }

    /// The bare channel (sends no token).
    pub fn channel(&self) -> &Channel {
        &self.inner
    }
}

impl tower::Service<http::Request<Body>> for AuthChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        if let Some(h) = &self.header {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, h.clone());
        }
        tower::Service::call(&mut self.inner, req)
    }
}
