//! How verify's listeners serve its routes: HTTP/1.1 and cleartext HTTP/2 with prior knowledge
//! (h2c) on the plain listener, HTTP/2 or HTTP/1.1 by ALPN on the TLS one, every connection
//! counted and wrapped in [`GoAwayIo`] so that HTTP/2 connections are told to go away when
//! verify drains or when they grow old. Built from actix's parts rather than `HttpServer`,
//! which offers no way to reach a connection's byte stream.

use std::fmt::Debug;
use std::net::TcpListener;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Protocol, Request, Response};
use actix_server::Server;
use actix_service::{ServiceFactoryExt, fn_service, map_config};
use actix_tls::accept::TlsError;
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::dev::{AppConfig, Service, ServiceFactory};
use actix_web::rt::net::TcpStream;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::goaway::{GoAwayIo, GoAwayWhen, Known};

/// Per-stream HTTP/2 receive window: a forwarded body up to `FORWARDED_BODY_LIMIT` in one go.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
/// Per-connection HTTP/2 receive window: bodies of many concurrent streams. The number of
/// streams is not limited: a proxy multiplexes hundreds of auth requests on one connection.
const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The listeners and what their connections are counted in.
pub struct Listeners {
    pub plain: TcpListener,
    pub plain_connections: IntCounter,
    pub tls: Option<(TcpListener, rustls::ServerConfig)>,
    pub tls_connections: IntCounter,
}

/// Starts serving `app` (one instance per worker) on `listeners`. Signals are the caller's:
/// the returned server stops when told, letting in-flight requests finish for up to 30 s.
pub fn serve<F, I, S, B>(app: F, listeners: Listeners, when: GoAwayWhen) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut builder = Server::build().disable_signals().shutdown_timeout(30);
    let signal = builder.graceful_shutdown_signal();
    // One worker's HTTP service: `HttpServer`'s defaults (5 s keep-alive and request head
    // timeout, 1 s to close), HTTP/1.1 connections closing after their request once the server
    // stops gracefully.
    let http = move || {
        let routes = app().into_factory().map_err(|e| e.into().error_response());
        let shutdown = signal.clone();
        HttpService::build()
            .graceful_shutdown_signal(move || {
                let signal = shutdown.clone();
                async move { signal.notified().await }
            })
            .keep_alive(KeepAlive::default())
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .h2_initial_window_size(H2_STREAM_WINDOW)
            .h2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .finish(map_config(routes, |_| AppConfig::default()))
    };

    let (plain_http, go_away) = (http.clone(), when.clone());
    let counter = listeners.plain_connections;
    builder = builder.listen("verify", listeners.plain, move || {
        let (when, counter) = (go_away.clone(), counter.clone());
        fn_service(move |io: TcpStream| {
            let when = when.clone();
            counter.inc();
            async move {
                // The start of the HTTP/2 preface (RFC 9113 §3.4) means h2c.
                let mut start = [0u8; 12];
                io.peek(&mut start).await?;
                let h2 = &start == b"PRI * HTTP/2";
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>(accepted(Conn::Plain(io), h2, peer, when))
            }
        })
        .and_then(plain_http())
    })?;

    if let Some((socket, mut config)) = listeners.tls {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let counter = listeners.tls_connections;
        builder = builder.listen("verify-tls", socket, move || {
            let (when, counter) = (when.clone(), counter.clone());
            let mut acceptor = Acceptor::new(config.clone());
            acceptor.set_handshake_timeout(Duration::from_secs(3));
            acceptor
                .map_init_err(|_| ())
                .map_err(TlsError::into_service_error)
                .and_then(move |io: TlsStream<TcpStream>| {
                    let when = when.clone();
                    counter.inc();
                    async move {
                        let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        let _ = io.get_ref().0.set_nodelay(true);
                        let peer = io.get_ref().0.peer_addr().ok();
                        let conn = Conn::Tls(Box::new(io));
                        Ok::<_, TlsError<std::io::Error, DispatchError>>(accepted(
                            conn, h2, peer, when,
                        ))
                    }
                })
                .and_then(http().map_err(TlsError::Service))
        })?;
    }
    Ok(builder.run())
}

/// An accepted connection as the HTTP service takes it: wrapped for GOAWAY, with its protocol.
fn accepted(
    conn: Conn,
    h2: bool,
    peer: Option<std::net::SocketAddr>,
    when: GoAwayWhen,
) -> (GoAwayIo<Conn>, Protocol, Option<std::net::SocketAddr>) {
    let (known, protocol) = if h2 {
        (Known::Http2, Protocol::Http2)
    } else {
        (Known::Http1, Protocol::Http1)
    };
    (GoAwayIo::new(conn, known, when), protocol, peer)
}

/// A connection verify accepted, on the plain listener or the TLS one: one type, so one HTTP
/// service serves both.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
