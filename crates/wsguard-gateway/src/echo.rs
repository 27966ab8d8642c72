//! `wsguard echo`: a plain WebSocket echo backend for trying wsguard out and for tests.
//!
//! Echoes text and binary messages, answers pings, returns the client's close code, and picks the
//! first subprotocol offered (so end-to-end negotiation can be seen). No policy, no auth: never
//! expose it beyond loopback.

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Serves echo connections on `listener` forever.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
            let pick_protocol = |req: &Request, mut resp: Response| {
                let first = req
                    .headers()
                    .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .find(|p| !p.is_empty())
                    .and_then(|p| HeaderValue::from_str(p).ok());
                if let Some(p) = first {
                    resp.headers_mut()
                        .insert(http::header::SEC_WEBSOCKET_PROTOCOL, p);
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                pick_protocol,
                Some(
                    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                        .read_buffer_size(4096)
                        .write_buffer_size(0)
                        .max_message_size(Some(64 << 20))
                        .max_frame_size(Some(16 << 20)),
                ),
            )
            .await
            else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}
