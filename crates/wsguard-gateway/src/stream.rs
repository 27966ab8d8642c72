//! The byte streams under the relay: plain TCP, TLS (boxed: rustls' state is large), or, if
//! hyper does not hand the connection's own stream back after an upgrade, hyper's wrapper.
//!
//! Owns [`Stream`] and [`unwrap_upgraded`], which takes the connection's own stream back out of
//! hyper's upgrade (one layer of indirection less on every read and write) together with any
//! bytes hyper had already read past the handshake. It must not look at the bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A socket's byte stream; `T` is the TLS stream type of its side.
#[derive(Debug)]
pub enum Stream<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<T>),
    /// Hyper's upgraded connection (a stream type this module does not know).
    Upgraded(TokioIo<Upgraded>),
}

/// The client side: TLS terminated here.
pub type ClientStream = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
/// The upstream side: TLS to a `wss://` upstream.
pub type UpstreamStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The stream under an upgraded connection that hyper served over `TokioIo<TcpStream>`,
/// `TokioIo<T>` or `TokioIo<Stream<T>>`, and a copy of the bytes hyper had read past the
/// handshake (a copy: hyper's bytes would keep its whole read buffer alive with the socket).
pub fn unwrap_upgraded<T>(u: Upgraded) -> (Stream<T>, Vec<u8>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, read) = unwrap(u);
    (stream, read.to_vec())
}

fn unwrap<T>(u: Upgraded) -> (Stream<T>, Bytes)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let u = match u.downcast::<TokioIo<TcpStream>>() {
        Ok(p) => return (Stream::Plain(p.io.into_inner()), p.read_buf),
        Err(u) => u,
    };
    let u = match u.downcast::<TokioIo<T>>() {
        Ok(p) => return (Stream::Tls(Box::new(p.io.into_inner())), p.read_buf),
        Err(u) => u,
    };
    match u.downcast::<TokioIo<Stream<T>>>() {
        Ok(p) => (p.io.into_inner(), p.read_buf),
        Err(u) => (Stream::Upgraded(TokioIo::new(u)), Bytes::new()),
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Stream::Upgraded($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
