//! Accepting connections for the gRPC server: at most `limits.max_connections` open, each
//! TLS handshake (when TLS is on) done off the accept loop under a deadline, and each
//! connection closed when its HTTP/2 preface has not arrived within
//! `limits.header_read_timeout` (slow-loris clients that connect and send nothing).
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::debug;

use crate::limits::Limits;

/// Bytes of the HTTP/2 client connection preface ("PRI * HTTP/2.0...").
const PREFACE_LEN: usize = 24;

/// Accepts on `listener`, turns each TCP connection into `IO` with `handshake` (identity for
/// plain text, the TLS handshake otherwise) within `limits.header_read_timeout`, and yields
/// the connections tonic serves. The accept loop ends with the returned stream.
pub fn incoming<IO, H, F>(
    listener: TcpListener,
    limits: Limits,
    handshake: H,
) -> ReceiverStream<io::Result<Guarded<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(128);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            // Past max_connections, stop accepting: new clients wait in the kernel backlog.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let started = Instant::now();
            let shake = handshake(tcp);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.header_read_timeout, shake).await {
                    Ok(Ok(io)) => {
                        metrics::gauge!("floodgate_connections_open").increment(1.0);
                        let deadline = started + limits.header_read_timeout;
                        let _ = tx.send(Ok(Guarded::new(io, permit, deadline))).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("floodgate_connections_refused_total", "reason" => "handshake").increment(1);
                        debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("floodgate_connections_refused_total", "reason" => "handshake_timeout").increment(1);
                        debug!(%peer, "TLS handshake not done within limits.header_read_timeout");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A served connection: holds its connection slot, and fails reads with `TimedOut` while
/// the HTTP/2 preface is incomplete past its deadline.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    /// Preface bytes still expected; 0 once the preface is in.
    awaiting: usize,
    /// When the preface must be complete.
    deadline: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit, deadline: Instant) -> Self {
        Self {
            io,
            _permit: permit,
            awaiting: PREFACE_LEN,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        metrics::gauge!("floodgate_connections_open").decrement(1.0);
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.awaiting > 0 {
            if let Poll::Ready(Ok(())) = r {
                let got = buf.filled().len() - before;
                this.awaiting = this.awaiting.saturating_sub(got);
                if got == 0 || this.awaiting == 0 {
                    return r;
                }
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                metrics::counter!("floodgate_connections_refused_total", "reason" => "preface_timeout").increment(1);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP/2 preface not received within limits.header_read_timeout",
                )));
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
