//! A proxied socket's life after the 101: registration (so revocations find it), the re-checks
//! of what may have changed during the handshake, the relay with the route's message policy,
//! throttled activity touches, and the access log line at its close.
//!
//! The frames themselves are the relay's (`relay.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsguard_session::Session;

use crate::reason::CloseReason;
use crate::relay::{Ended, relay};
use crate::state::{Gateway, now_secs};

impl Gateway {
    pub(crate) async fn run_socket<C, U>(
        &self,
        client: crate::relay::Opened<'_, C>,
        upstream: crate::relay::Opened<'_, U>,
        (mut session, revocation_mark): (Option<Session>, Option<u64>),
        (peer, client_ip): (SocketAddr, std::net::IpAddr),
        (route, upstream_key): (&str, &str),
        messages: &Arc<crate::policy::RoutePolicy>,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let now = now_secs();
        let opened = Instant::now();
        let (registration, stop) = self.registry.register(
            session.as_ref(),
            (peer, client_ip),
            (route, upstream_key),
            now,
        );
        // A revocation between authentication and registration would be missed: check again
        // (without a store round trip when no revocation was announced since the mark).
        if let Some(s) = &session
            && let Err(r) = Box::pin(self.sessions.still_live_after(s, revocation_mark, now)).await
        {
            tracing::info!(event = "closed_by_gateway", reason = CloseReason::SessionRevoked.code(), peer = %peer, detail = %r);
            self.registry
                .close_conn(registration.id(), CloseReason::SessionRevoked);
        }
        // Likewise a reload that retired the token's key between authentication and
        // registration (one that lands after this check finds the socket in the registry).
        if let Some(s) = &session
            && !self.sessions.keys_still_accept(s, now)
        {
            tracing::info!(event = "closed_by_gateway", reason = CloseReason::KeyRetired.code(), peer = %peer);
            self.registry
                .close_conn(registration.id(), CloseReason::KeyRetired);
        }
        let expires_in = session
            .as_ref()
            .map(|s| Duration::from_secs(s.expires_at().saturating_sub(now)));
        let uid = session.as_ref().map(|s| s.uid().as_str().to_owned());
        let touch_every = Duration::from_secs(self.sessions.touch_interval().max(1));
        let mut next_touch = Instant::now() + touch_every;
        let sessions = self.sessions.clone();
        let policy = messages.connection(uid.as_deref());
        self.metrics.open.inc();
        let timing = {
            let settings = &self.state.load().settings;
            crate::relay::Timing {
                idle: settings.idle_timeout,
                ping: settings.ping_interval,
                pong: settings.pong_timeout,
                send: settings.send_timeout,
            }
        };
        // Boxed: the relay lives as long as the socket, the states around it do not, and a
        // separate allocation keeps them from being laid out side by side (memory per socket).
        let cfg = messages.config();
        let limits = crate::relay::Limits {
            max_frame: messages.max_frame_bytes() as u64,
            max_message: cfg.max_message_bytes as u64,
            max_fragments: cfg.max_fragments,
            assembly: Some(cfg.assembly_timeout),
            max_inflate_ratio: Some(cfg.max_inflate_ratio),
        };
        let ended = Box::pin(relay(
            client,
            upstream,
            stop,
            (&self.metrics, registration.traffic()),
            expires_in,
            timing,
            limits,
            |seen| {
                let verdict = policy.judge(seen);
                let Some(s) = session.as_mut() else {
                    return verdict;
                };
                if !matches!(
                    verdict,
                    crate::policy::Verdict::Forward | crate::policy::Verdict::Rewrite(_)
                ) {
                    return verdict;
                }
                let now_i = Instant::now();
                if now_i < next_touch {
                    return verdict;
                }
                next_touch = now_i + touch_every;
                let sessions = sessions.clone();
                let mut s = s.clone();
                tokio::spawn(async move {
                    if let Err(e) = sessions.touch_if_due(&mut s, now_secs()).await {
                        tracing::warn!(error = %e, "cannot record session activity");
                    }
                });
                verdict
            },
        ))
        .await;
        self.metrics.open.dec();
        match &ended {
            Ended::ByGateway(r) => self.metrics.closed_by_gateway(*r),
            Ended::ByClient(code) => self.metrics.closed(*code, "client"),
            Ended::ByUpstream(code) => self.metrics.closed(*code, "upstream"),
        }
        // The access log: one line per socket, at its close.
        let (closed_by, code, reason) = match &ended {
            Ended::ByGateway(r) => ("gateway", Some(r.close_code()), r.code()),
            Ended::ByClient(code) => ("client", *code, "-"),
            Ended::ByUpstream(code) => ("upstream", *code, "-"),
        };
        let t = registration.traffic().counts();
        // The first 8 characters: enough to find the session in the admin API, too few to use.
        let sid = session
            .as_ref()
            .and_then(|s| s.sid().as_str().get(..8))
            .unwrap_or("-");
        tracing::info!(
            event = "socket_closed",
            conn = registration.id(),
            route,
            upstream = upstream_key,
            user = uid.as_deref().unwrap_or("-"),
            session = sid,
            client = %client_ip,
            peer = %peer,
            duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
            messages_in = t.messages_in,
            bytes_in = t.bytes_in,
            messages_out = t.messages_out,
            bytes_out = t.bytes_out,
            code = code.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            closed_by,
            reason,
        );
        drop(registration);
    }
}
