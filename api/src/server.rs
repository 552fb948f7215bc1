//! The API's HTTP server: hyper's HTTP/1 connection loop with the limits axum's `serve`
//! leaves out. A client gets `AIPROD_HTTP_HEADER_TIMEOUT_MS` to send its headers (so a
//! half-sent request cannot hold a connection, or shutdown, forever); each connection learns
//! its peer's address (for the audit log); and after the stop signal, open requests get
//! `AIPROD_HTTP_SHUTDOWN_DEADLINE_MS` to finish before the server returns anyway.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `app` on `listener` until `stop`, then drains for at most `deadline`.
pub(crate) async fn serve_http1(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    deadline: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("api drained"),
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(deadline_ms = deadline.as_millis() as u64, "api shutdown deadline passed; open requests are dropped");
        }
    }
    Ok(())
}
