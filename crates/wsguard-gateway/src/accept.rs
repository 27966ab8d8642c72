//! The public listener: accepting connections, admission before anything is read (the
//! handshake rate and a place among the connections not yet upgraded), the TLS handshake, and
//! serving each connection's HTTP/1.1 until it is upgraded; graceful shutdown.
//!
//! It hands every request to the pipeline (`pipeline.rs`) and knows nothing of what a request
//! asks for.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::limits::PendingSlot;
use crate::reason::{CloseReason, Refusal};
use crate::refusal::{http_layer_refusal, refuse_unread};
use crate::state::Gateway;

impl Gateway {
    /// Accepts connections until shutdown, then closes every socket with 1001 and waits (bounded)
    /// for them to finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut shutdown = self.shutdown.subscribe();
        let revocations = tokio::spawn(Arc::clone(&self).follow_revocations());
        let housekeeping = tokio::spawn(Arc::clone(&self).housekeeping());
        let health = tokio::spawn(Arc::clone(&self).health_checks());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let state = self.state.load();
                    // Before anything is read: a token from the address's handshake bucket (if
                    // a rate is set), then a place among the connections not yet upgraded, so
                    // that fast, slow or silent clients cannot take more than their share.
                    let trusted =
                        crate::limits::is_trusted(peer.ip(), &state.settings.trusted_proxies);
                    let rate = match &state.handshake_rate {
                        Some(rate) if !trusted => rate.check(peer.ip()),
                        _ => Ok(()),
                    };
                    let admitted =
                        rate.and_then(|()| self.limits.acquire_pending(peer.ip(), !trusted));
                    let pending = match admitted {
                        Ok(p) => p,
                        Err(refusal) => {
                            self.refuse_unread(refusal, &stream, peer, state.tls.is_none());
                            continue;
                        }
                    };
                    match &state.tls {
                        None => {
                            tokio::spawn(
                                Arc::clone(&self).connection(stream, peer, false, pending),
                            );
                        }
                        Some(acceptor) => {
                            let accept = acceptor.accept(stream);
                            let deadline = state.settings.handshake_timeout;
                            let gateway = Arc::clone(&self);
                            tokio::spawn(async move {
                                match tokio::time::timeout(deadline, accept).await {
                                    Ok(Ok(tls)) => gateway.connection(tls, peer, true, pending).await,
                                    Ok(Err(e)) => {
                                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                                    }
                                    Err(_) => {
                                        tracing::debug!(peer = %peer, "TLS handshake timed out");
                                    }
                                }
                            });
                        }
                    }
                }
                () = crate::state::shutdown_signalled(&mut shutdown) => break,
            }
        }
        drop(listener);
        let asked = self.registry.close_all(CloseReason::Shutdown);
        tracing::info!(event = "shutdown", sockets = asked, "closing sockets");
        let deadline = Instant::now() + self.state.load().settings.drain_timeout;
        while !self.registry.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        revocations.abort();
        housekeeping.abort();
        health.abort();
    }

    /// Refuses a connection before reading from it (a pending-handshake limit is full): see
    /// [`refuse_unread`]; on a plain listener its answer is written if the socket takes it at
    /// once. A request already received makes the close a reset, so the client may not see it.
    fn refuse_unread(&self, refusal: Refusal, stream: &TcpStream, peer: SocketAddr, plain: bool) {
        let answer = refuse_unread(&self.metrics, refusal, peer);
        if plain {
            let _ = stream.try_write(answer.as_bytes());
        }
    }

    /// Serves one connection's HTTP until it is upgraded or ends; `pending` is its place among
    /// the connections not yet upgraded, given back when this returns.
    async fn connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        tls: bool,
        pending: PendingSlot,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        let settings = &self.state.load().settings;
        let gateway = Arc::clone(&self);
        let service = hyper::service::service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, tls).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.handshake_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192))
            .max_headers(settings.max_headers);
        // Returns once the 101 is written and the socket handed over, or the connection ends.
        if let Err(e) = builder.serve_connection(io, service).with_upgrades().await {
            http_layer_refusal(&self.metrics, &e, peer);
        }
        drop(pending);
    }
}
