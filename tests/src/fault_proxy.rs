//! A TCP proxy that injects network faults between floodgate servers and Redis.
//!
//! Point a server at [`FaultProxy::url`] instead of Redis, then switch the proxy's mode at run
//! time: [`pass`](FaultProxy::pass), [`delay`](FaultProxy::delay),
//! [`blackhole`](FaultProxy::blackhole) or [`reset`](FaultProxy::reset). A mode applies to
//! the connections already open and to new ones. [`connections`](FaultProxy::connections)
//! counts live client connections, to catch connection leaks.
//!
//! Each direction of a connection is a reader and a writer joined by a bounded queue of
//! chunks stamped with their delivery time; passing costs one copy per chunk and no timer.
//! Dropping the proxy stops the listener and every connection task. The proxy's tasks run
//! on the runtime that called [`FaultProxy::start`]: a test that blocks that runtime's only
//! thread (a synchronous Redis client on a current-thread runtime) stalls the proxy too.
use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward every byte as it comes.
    Pass,
    /// Forward every chunk, in both directions, this much later than it arrived.
    Delay(Duration),
    /// Accept and read, but forward nothing and never close.
    Blackhole,
    /// Close every connection with a TCP RST, and reset new ones right after accepting.
    Reset,
}

/// A running proxy to one upstream address; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The current mode; dropping it tells every connection task to end.
    mode: watch::Sender<FaultMode>,
    /// Live client connections.
    live: Arc<AtomicUsize>,
    /// The accept loop.
    accept: JoinHandle<()>,
}

/// Chunks read at once; Redis replies are usually far smaller.
const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction before the reader waits for the writer.
const QUEUE: usize = 64;
/// How long a new connection may take to reach the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, in [`FaultMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fault proxy: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fault proxy: no local address");
        let (mode, _) = watch::channel(FaultMode::Pass);
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, upstream, mode.clone(), live.clone()));
        Self {
            addr,
            mode,
            live,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:<port>` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.mode.borrow()
    }

    /// Forwards normally again.
    pub fn pass(&self) {
        self.set(FaultMode::Pass);
    }

    /// Delays every chunk in both directions by `by` (order is kept; throughput is not
    /// limited). Chunks already queued keep the delivery time they were given.
    pub fn delay(&self, by: Duration) {
        self.set(FaultMode::Delay(by));
    }

    /// Swallows all traffic without answering or closing, like a dead network path.
    pub fn blackhole(&self) {
        self.set(FaultMode::Blackhole);
    }

    /// Resets every open connection (RST) and every new one, until another mode is set.
    pub fn reset(&self) {
        self.set(FaultMode::Reset);
    }

    /// Sets any mode.
    pub fn set(&self, mode: FaultMode) {
        self.mode.send_replace(mode);
    }

    /// How many client connections are open through the proxy now.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Dropping `mode` (after this) makes every connection's `changed()` fail: they end.
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<FaultMode>,
    live: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == FaultMode::Reset {
            rst(&client);
            continue;
        }
        let _ = client.set_nodelay(true);
        live.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(live.clone());
        tokio::spawn(connection(client, upstream, mode.subscribe(), guard));
    }
}

/// Decrements the live count when a connection task ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes the next close of `stream` send RST instead of FIN.
fn rst(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<FaultMode>,
    _guard: LiveGuard,
) {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream));
    let mut server = tokio::select! {
        r = connect => match r {
            Ok(Ok(s)) => s,
            // No upstream: a blackhole still holds the client; other modes close it.
            _ => return hold_without_upstream(client, mode).await,
        },
        _ = wait_for_reset(&mut mode) => return rst(&client),
    };
    let _ = server.set_nodelay(true);
    let (up_mode, down_mode) = (mode.clone(), mode.clone());
    let reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let pumps =
            async { tokio::join!(direction(cr, sw, up_mode), direction(sr, cw, down_mode)) };
        tokio::select! {
            _ = pumps => false,
            reset = wait_for_reset(&mut mode) => reset,
        }
    };
    if reset {
        rst(&client);
        rst(&server);
    }
}

/// Resolves with `true` when the mode becomes [`FaultMode::Reset`], `false` when the proxy
/// is dropped.
async fn wait_for_reset(mode: &mut watch::Receiver<FaultMode>) -> bool {
    loop {
        if *mode.borrow_and_update() == FaultMode::Reset {
            return true;
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// A client whose upstream cannot be reached: read and discard while blackholed, then close
/// (RST when reset, FIN otherwise).
async fn hold_without_upstream(mut client: TcpStream, mut mode: watch::Receiver<FaultMode>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let current = *mode.borrow_and_update();
        match current {
            FaultMode::Reset => return rst(&client),
            FaultMode::Pass | FaultMode::Delay(_) => return,
            FaultMode::Blackhole => {}
        }
        tokio::select! {
            r = client.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
            r = mode.changed() => if r.is_err() { return },
        }
    }
}

/// One direction: read chunks from `from`, deliver them to `to` when due. Returns when
/// either side ends or fails, after passing the end of stream on (half-close).
async fn direction<R, W>(from: R, to: W, mode: watch::Receiver<FaultMode>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::join!(reader(from, tx, mode.clone()), writer(rx, to, mode));
}

async fn reader<R: AsyncRead + Unpin>(
    mut from: R,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<FaultMode>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        let due = match *mode.borrow() {
            FaultMode::Blackhole | FaultMode::Reset => continue,
            FaultMode::Pass => Instant::now(),
            FaultMode::Delay(d) => Instant::now() + d,
        };
        if tx.send((due, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
    // End of stream. A blackhole never closes: hold the other side until the mode changes.
    while *mode.borrow_and_update() == FaultMode::Blackhole {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut to: W,
    mode: watch::Receiver<FaultMode>,
) {
    while let Some((due, chunk)) = rx.recv().await {
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if matches!(*mode.borrow(), FaultMode::Blackhole | FaultMode::Reset) {
            continue;
        }
        if write(&mut to, &chunk).await.is_err() {
            // The peer is gone: drop the queue so the reader stops too.
            return;
        }
    }
    let _ = to.shutdown().await;
}

async fn write<W: AsyncWrite + Unpin>(to: &mut W, chunk: &[u8]) -> io::Result<()> {
    to.write_all(chunk).await?;
    to.flush().await
}
