//! Runs the chat for development: `axum-chat [CONFIG [ADDRESS]]` (by default the shipped
//! `axum-chat.toml` on 127.0.0.1:3000), with sessions in memory under keys made at start and the
//! development login on. Open http://localhost:3000 in two browser windows, log in as two users
//! and chat; log out in one and its socket closes with 1008 `session revoked`.
//!
//! Owns only the wiring (arguments, sessions, listener); the app is `lib.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use wsguard_session::{Mode, Sessions};
use wsguard_store::MemoryStore;
use wsguard_token::{KeyRing, TokenPolicy, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map_or_else(|| PathBuf::from(axum_chat::DEFAULT_CONFIG), PathBuf::from);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let mut config = axum_chat::Config::load(&path)?;
    config.dev_login = true;

    let verifier = Verifier::new(Arc::new(KeyRing::ephemeral()), TokenPolicy::default());
    let sessions = Sessions::new(verifier, Arc::new(MemoryStore::new()), Mode::Stateful, 60);
    let app = axum_chat::app(sessions, &config)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    // The address bound (with port 0, the one the system chose): the binary's test reads it.
    eprintln!(
        "axum-chat on http://{} with {} (development login on)",
        listener.local_addr()?,
        path.display()
    );
    axum::serve(listener, app).await?;
    Ok(())
}
