//! Connections for the gRPC server, each with its [`ConnectionPeer`]: the remote address, over
//! mutual TLS the client certificate's subject, and the places its calls hold (admission's
//! per-connection limits, kept on the connection rather than in a map every call would lock).
//! [`incoming`] wraps the accepted plain TCP streams of a listener; [`crate::tls`] makes
//! [`crate::tls::TlsConn`]s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use patron_grpc::auth::ConnectionPeer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpIncoming};

/// One established connection (a `TcpStream`, or TLS over one) and what is known of its peer:
/// tonic copies the peer into every request on it.
pub struct Conn<S> {
    stream: S,
    peer: ConnectionPeer,
}

/// A plain TCP connection.
pub type PlainConn = Conn<TcpStream>;

impl<S> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<S> Conn<S> {
    pub fn new(stream: S, peer: ConnectionPeer) -> Self {
        Self { stream, peer }
    }

    /// The peer's address, client certificate subject and held places.
    pub fn peer(&self) -> &ConnectionPeer {
        &self.peer
    }

    /// The underlying stream (for TLS: negotiated protocol, peer certificates).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl PlainConn {
    fn accepted(stream: TcpStream) -> Self {
        let peer = ConnectionPeer {
            remote_addr: stream.peer_addr().ok(),
            ..ConnectionPeer::default()
        };
        Self::new(stream, peer)
    }
}

/// The connections accepted on `listener`, with TCP_NODELAY set: a small unary answer must not
/// wait for Nagle's algorithm to meet the client's delayed ACK (~40 ms per call on loopback).
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<PlainConn>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(PlainConn::accepted))
}

impl<S> Connected for Conn<S> {
    type ConnectInfo = ConnectionPeer;

    fn connect_info(&self) -> ConnectionPeer {
        self.peer.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
