//! Runs the chat on 127.0.0.1:3000 (or the address given as the first argument) for
//! development: sessions in memory under keys made at start, and the development login on.
//! Open http://localhost:3000 in two browser windows, log in as two users and chat; log out in
//! one and its socket closes with 1008 `session revoked`.

use std::sync::Arc;

use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, TokenPolicy, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    let sessions = Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60);
    let mut config = axum_chat::Config::parse(axum_chat::DEFAULT_CONFIG)?;
    config.dev_login = true;
    let app = axum_chat::app(sessions, &config)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("axum-chat on http://{addr} (development login on)");
    axum::serve(listener, app).await?;
    Ok(())
}
