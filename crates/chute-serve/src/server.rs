//! The listening side: socket, per-connection HTTP (1.1 or 2) and shutdown.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::access::{Access, Auth, ServeOptions};
use crate::backend::Backend;
use crate::ServeError;

/// How long in-flight requests may run on after shutdown is requested. Long enough
/// for a small response to finish, short enough that tests and Ctrl-C stay snappy.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Pause after a failed accept (typically out of file descriptors) so that the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What to serve, where, and the one key pair clients must sign with (SigV4).
#[derive(Clone)]
pub struct ServeConfig {
    /// Directory whose sub-directories are the buckets.
    pub root: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`Server::addr`]).
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("root", &self.root)
            .field("addr", &self.addr)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// A running S3 endpoint. Dropping it stops accepting connections, like
/// [`Server::shutdown`] but without waiting for in-flight requests.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Checks the configuration, binds the socket and starts accepting connections on
    /// the current tokio runtime. Returns once the socket is listening, so clients may
    /// connect as soon as this returns.
    ///
    /// # Errors
    ///
    /// [`ServeError`] naming ROOT when it is missing or not a directory, naming the
    /// address when it cannot be bound, or when a key is empty.
    pub async fn start(cfg: ServeConfig) -> Result<Server, ServeError> {
        Server::start_with(cfg, ServeOptions::default()).await
    }

    /// [`Server::start`] with the extra behaviour in `opts` (more keys, anonymous
    /// reads, a bucket region, a request log).
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub async fn start_with(cfg: ServeConfig, opts: ServeOptions) -> Result<Server, ServeError> {
        if cfg.access_key.is_empty() || cfg.secret_key.is_empty() {
            return Err(ServeError::MissingCredentials);
        }
        let unavailable = |source| ServeError::RootUnavailable {
            root: cfg.root.clone(),
            source,
        };
        let meta = tokio::fs::metadata(&cfg.root).await.map_err(unavailable)?;
        if !meta.is_dir() {
            return Err(ServeError::RootNotADirectory { root: cfg.root });
        }
        let root = tokio::fs::canonicalize(&cfg.root)
            .await
            .map_err(unavailable)?;

        // s3s-fs sweeps leftover temporary files from ROOT when it starts.
        let backend_root = root.clone();
        let backend = tokio::task::spawn_blocking(move || Backend::new(backend_root))
            .await
            .map_err(|e| ServeError::Storage {
                root: root.clone(),
                detail: e.to_string(),
            })?
            .map_err(|e| ServeError::Storage {
                root: root.clone(),
                detail: format!("{e:?}"),
            })?;

        let mut builder = S3ServiceBuilder::new(backend);
        builder.set_auth(Auth {
            access_key: cfg.access_key,
            secret_key: cfg.secret_key,
            extra: opts.extra_keys.clone(),
        });
        builder.set_access(Access { opts });
        let service = builder.build();

        let bind_err = |source| ServeError::Bind {
            addr: cfg.addr,
            source,
        };
        let listener = TcpListener::bind(cfg.addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;

        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, service, stopped));
        info!(%addr, root = %root.display(), "serving S3");
        Ok(Server { addr, stop, task })
    }

    /// The address actually listened on (with the real port when 0 was asked for).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients should use as their S3 endpoint, e.g. `http://127.0.0.1:9000`.
    /// A wildcard listen address is reported as loopback, which is always reachable.
    #[must_use]
    pub fn endpoint_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Stops accepting connections, lets in-flight requests finish for a short grace
    /// period, then closes whatever is left.
    pub async fn shutdown(self) {
        // The loop may already be gone (e.g. the runtime is shutting down); there is
        // nothing left to stop then.
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "the S3 server task ended abnormally");
        }
    }
}

async fn accept_loop(listener: TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();

    loop {
        tokio::select! {
            // Either an explicit stop or the Server being dropped.
            _ = &mut stop => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Small responses (errors, HEAD, listings) should not wait for
                    // Nagle's algorithm.
                    if let Err(e) = socket.set_nodelay(true) {
                        debug!(%peer, error = %e, "could not set TCP_NODELAY");
                    }
                    let conn = http.serve_connection(TokioIo::new(socket), service.clone());
                    let conn = graceful.watch(conn.into_owned());
                    conns.spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            open = conns.len(),
            "closing connections still busy after the shutdown grace period"
        );
    }
    conns.shutdown().await;
    info!("S3 server stopped");
}
