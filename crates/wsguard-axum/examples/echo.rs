//! The smallest guarded app: `/ws` echoes what the route's policy lets through, for sockets that
//! a page on `http://localhost:3000` opened with a live session cookie. Sessions are in memory
//! and their keys are made at start, so no session can exist yet: see `examples/axum-chat` for
//! an app that logs users in.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use wsguard_axum::{GuardedSocket, GuardedUpgrade, WsGuardLayer};
use wsguard_policy::origin::OriginPolicy;
use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, TokenPolicy, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    let sessions = Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60);
    let origins = OriginPolicy::new(&["http://localhost:3000".to_owned()], false)?;

    let app = Router::new()
        .route("/ws", get(ws))
        .layer(WsGuardLayer::new(sessions, origins));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(|mut socket: GuardedSocket| async move {
        while let Some(message) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}
