//! Hand-made clients, for exact bytes: connections from a chosen loopback address that send
//! nothing, what the gateway writes before it hangs up, upgrades written by hand with bytes
//! after them, client frames built with `wire`, and tungstenite frames that skip its checks.

use super::*;

pub fn raw_frame(
    payload: &[u8],
    opcode: tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode,
    fin: bool,
) -> Message {
    Message::Frame(
        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            payload.to_vec(),
            opcode,
            fin,
        ),
    )
}

/// A connection from `ip` (a loopback address) that sends nothing.
pub async fn silent_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{ip}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the gateway keeps `s` open: nothing read from it for a while.
pub async fn held(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(150), s.read(&mut b))
        .await
        .is_err()
}

/// Everything the gateway wrote to `s` before closing it.
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the gateway closes a refused connection at once")
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// A client frame, masked with `key`.
pub fn client_frame(op: wire::Op, fin: bool, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode(&mut out, fin, op, Some(key), payload);
    out
}

/// Opens a socket by hand, sending `extra` bytes in the same write as the upgrade request.
pub async fn raw_connect(h: &Harness, path: &str, token: &str, extra: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(extra);
    s.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// The client's next frame from the gateway, within a second.
pub async fn next_raw(s: &mut TcpStream) -> (wire::Header, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(1), read_frame(s, wire::From::Server))
        .await
        .expect("a frame in time")
        .expect("a frame")
}
