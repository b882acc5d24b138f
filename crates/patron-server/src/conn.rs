//! Connections for the gRPC server, each with its [`ConnectionPeer`]: the remote address, over
//! mutual TLS the client certificate's subject, and the places its calls hold (admission's
//! per-connection limits, kept on the connection rather than in a map every call would lock).
//! [`incoming`] wraps the accepted plain TCP streams of a listener; [`crate::tls`] makes
//! [`crate::tls::TlsConn`]s.
//!
//! A connection also decides how HTTP/2's frames reach the socket; see [`Conn`]'s `AsyncWrite`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

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
    /// Written bytes not yet passed to `stream` (see [`HOLD_BELOW`]); `held[sent..]` is what is
    /// left of them after a partial write.
    held: Vec<u8>,
    sent: usize,
}

/// A write shorter than this (with what is already held) is held back until the next write or
/// the flush, which then passes both to the socket in one call.
///
/// The connection tells h2 it has no vectored writes, so h2 copies every DATA frame of up to
/// 1 KiB into its own buffer with the frames around it: a unary answer's headers, message and
/// trailers (and those of the other calls answered meanwhile) then leave in one write. With
/// vectored writes h2 keeps any payload over 256 bytes apart and must write it out before it can
/// take the trailers, which cost GetCustomerValue (a ~500-byte answer) 1.75 `writev` calls per
/// call instead of one. A bigger DATA frame (a stream's messages) is written as h2's buffer
/// (its frame header) and then the payload: the held buffer goes out with the payload in one
/// vectored write, as before.
const HOLD_BELOW: usize = 4096;

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
        Self {
            stream,
            peer,
            held: Vec::new(),
            sent: 0,
        }
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

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Passes the held bytes to the stream.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let pending = this.held.len() - this.sent;
        if pending + buf.len() < HOLD_BELOW {
            // What a partial write already sent goes first, so `held` stays under the limit.
            this.held.drain(..this.sent);
            this.sent = 0;
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // The held bytes and `buf` in one call, while anything is held.
        while this.sent < this.held.len() {
            let held = &this.held[this.sent..];
            let bufs = [io::IoSlice::new(held), io::IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= held.len() {
                let of_buf = n - held.len();
                this.held.clear();
                this.sent = 0;
                if of_buf > 0 {
                    return Poll::Ready(Ok(of_buf));
                }
            } else {
                this.sent += n;
            }
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    /// No: see [`HOLD_BELOW`].
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn conn(stream: DuplexStream) -> Conn<DuplexStream> {
        Conn::new(stream, ConnectionPeer::default())
    }

    /// What the other end has received so far, without waiting for more.
    async fn received_now(other: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), other.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test]
    async fn small_writes_are_held_until_the_flush_and_leave_together() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut c = conn(near);
        assert!(!c.is_write_vectored(), "h2 must copy small frames together");
        c.write_all(b"headers|").await.expect("write");
        c.write_all(b"message|").await.expect("write");
        c.write_all(b"trailers").await.expect("write");
        assert!(
            received_now(&mut far).await.is_empty(),
            "nothing before the flush"
        );
        c.flush().await.expect("flush");
        assert_eq!(received_now(&mut far).await, b"headers|message|trailers");
        // Flushing with nothing held writes nothing more.
        c.flush().await.expect("flush");
        assert!(received_now(&mut far).await.is_empty());
    }

    #[tokio::test]
    async fn a_big_write_takes_the_held_bytes_with_it_in_order() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut c = conn(near);
        let payload: Vec<u8> = (0..HOLD_BELOW * 3).map(|i| (i % 251) as u8).collect();
        c.write_all(b"frame header").await.expect("write");
        // One poll_write: the held header and (some of) the payload, without a flush.
        let n = c.write(&payload).await.expect("write");
        assert!(n > 0);
        let mut want = b"frame header".to_vec();
        want.extend_from_slice(&payload[..n]);
        assert_eq!(received_now(&mut far).await, want);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut c = conn(near);
        c.write_all(b"goaway").await.expect("write");
        c.shutdown().await.expect("shutdown");
        let mut all = Vec::new();
        far.read_to_end(&mut all).await.expect("read to the end");
        assert_eq!(all, b"goaway");
    }

    /// Writes of every size through a pipe that takes a few bytes at a time (partial writes and
    /// full-pipe waits in the middle of held bytes): the other end gets exactly what was written,
    /// in order.
    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_through_partial_writes() {
        let (near, mut far) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.expect("read to the end");
            all
        });
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut c = conn(near);
        let mut want = Vec::new();
        for round in 0..300 {
            let len = match round % 4 {
                0 => rng.gen_range(0..16),
                1 => rng.gen_range(16..HOLD_BELOW),
                _ => rng.gen_range(HOLD_BELOW - 16..HOLD_BELOW * 2),
            };
            let chunk: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            c.write_all(&chunk).await.expect("write");
            want.extend_from_slice(&chunk);
            if rng.gen_range(0..5) == 0 {
                c.flush().await.expect("flush");
            }
        }
        c.shutdown().await.expect("shutdown");
        drop(c);
        assert_eq!(reader.await.expect("reader"), want);
    }
}
