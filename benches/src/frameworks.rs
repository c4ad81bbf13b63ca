//! Starting servers and connecting clients for the two frameworks under test: ours (any address
//! our transports accept), tarpc over its own serde transport (TCP or a Unix socket file), and
//! tarpc over our transports (`rpc::tarpc`, any address), which tells the gain of
//! our engine apart from the gain of our transport.
//!
//! Both servers run on a current-thread tokio runtime, as do both clients (with `--multi-thread`,
//! all of them on multi-thread ones): the same runtime shape on both sides, so the comparison is
//! between the frameworks, not between runtime set-ups.

use std::io;

use futures_util::{future, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::endpoint::Endpoint;
use crate::service::{
    Bench, BenchClient, BoxError, Ours, Tarpc, TarpcBench, TarpcBenchClient, TarpcBenchRequest, TarpcBenchResponse,
    TarpcImpl,
};

/// What each framework puts on the wire, printed with the results.
pub const OURS_ENCODING: &str = "postcard (the rpc wire format), bulk argument rpc::Bytes (received without a copy)";
/// See [`OURS_ENCODING`].
pub const TARPC_ENCODING: &str =
    "tarpc 0.37 serde transport, bincode 1 via tokio-serde, LengthDelimitedCodec, bulk argument serde_bytes::ByteBuf, TCP_NODELAY set";

/// See [`OURS_ENCODING`].
pub const TARPC_ON_OURS_ENCODING: &str =
    "tarpc 0.37 engine (client dispatch, BaseChannel) over our transport for the same address via rpc::tarpc, one postcard-encoded message per frame, bulk argument serde_bytes::ByteBuf";

/// tarpc's codec default is 8 MiB; the bulk echo needs 1 MiB plus a header.
const TARPC_MAX_FRAME: usize = 4 << 20;

/// Serves our `Bench` service on `addr` until the process exits.
pub async fn serve_ours(addr: &str) -> Result<(), BoxError> {
    let listener = rpc::listen(addr).await?;
    crate::announce(&listener.local_addr());
    rpc::Server::new().add_service(crate::service::BenchImpl.into_service()).serve(listener).await?;
    Ok(())
}

/// Serves our `Bench` service over this process's stdin and stdout (the child side of a
/// `spawn:` address) until the parent closes its end.
pub async fn serve_ours_stdio() -> Result<(), BoxError> {
    let server = rpc::Server::new().add_service(crate::service::BenchImpl.into_service());
    rpc::serve_stdio(server).await?;
    Ok(())
}

/// Connects our client to `addr`.
pub async fn connect_ours(addr: &str) -> Result<Ours, BoxError> {
    Ok(Ours(BenchClient::connect(addr).await?))
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(TARPC_MAX_FRAME).new_codec()
}

/// Serves tarpc's `TarpcBench` on `endpoint` until the process exits.
pub async fn serve_tarpc(endpoint: &Endpoint) -> Result<(), BoxError> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            crate::announce(&Endpoint::Tcp(listener.local_addr()?.to_string()));
            loop {
                let (stream, _) = listener.accept().await?;
                // tarpc's own tcp::listen leaves Nagle on; ours and raw turn it off.
                stream.set_nodelay(true)?;
                spawn_tarpc_stream(stream);
            }
        }
        Endpoint::Unix(path) => {
            let listener = tokio::net::UnixListener::bind(path)?;
            crate::announce(endpoint);
            loop {
                let (stream, _) = listener.accept().await?;
                spawn_tarpc_stream(stream);
            }
        }
        Endpoint::Abstract(_)
        | Endpoint::Tls { .. }
        | Endpoint::Fifo(_)
        | Endpoint::Spawn(_)
        | Endpoint::Shm(_)
        | Endpoint::Spin(_)
        | Endpoint::Mq(_) => Err("tarpc is measured over TCP and Unix socket files only".into()),
    }
}

/// Serves tarpc's `TarpcBench` on our transport for `addr` until the process exits.
pub async fn serve_tarpc_on_ours(addr: &str) -> Result<(), BoxError> {
    let incoming = rpc::tarpc::listen(addr).await?;
    crate::announce(&incoming.local_addr());
    incoming
        .for_each(|accepted| {
            match accepted {
                Ok(transport) => spawn_tarpc_channel(transport),
                Err(e) => eprintln!("rpc-bench: tarpc-on-ours server on {addr}: {e}"),
            }
            future::ready(())
        })
        .await;
    Err(format!("tarpc-on-ours server on {addr}: the listener failed").into())
}

fn spawn_tarpc_stream<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) {
    spawn_tarpc_channel(tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default()));
}

/// tarpc's documented serving pattern: one task per channel, one task per request.
fn spawn_tarpc_channel<T>(transport: T)
where
    T: tarpc::Transport<tarpc::Response<TarpcBenchResponse>, tarpc::ClientMessage<TarpcBenchRequest>> + Send + 'static,
{
    let channel = BaseChannel::with_defaults(transport);
    tokio::spawn(channel.execute(TarpcImpl.serve()).for_each(|response| {
        tokio::spawn(response);
        future::ready(())
    }));
}

fn tarpc_client_config() -> tarpc::client::Config {
    let mut config = tarpc::client::Config::default();
    // The default (1000) is exactly the deepest pipelined run; leave headroom so the limit is
    // never what is measured.
    config.max_in_flight_requests = 4096;
    config
}

/// Connects a tarpc client to `addr` over our transport for it.
pub async fn connect_tarpc_on_ours(addr: &str) -> Result<Tarpc, BoxError> {
    let transport = rpc::tarpc::connect(addr).await?;
    Ok(Tarpc(TarpcBenchClient::new(tarpc_client_config(), transport).spawn()))
}

/// Connects a tarpc client to `endpoint`.
pub async fn connect_tarpc(endpoint: &Endpoint) -> Result<Tarpc, BoxError> {
    let config = tarpc_client_config();
    let client = match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let transport = tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default());
            TarpcBenchClient::new(config, transport).spawn()
        }
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path).await?;
            let transport = tarpc::serde_transport::new(Framed::new(stream, codec()), Bincode::default());
            TarpcBenchClient::new(config, transport).spawn()
        }
        Endpoint::Abstract(_)
        | Endpoint::Tls { .. }
        | Endpoint::Fifo(_)
        | Endpoint::Spawn(_)
        | Endpoint::Shm(_)
        | Endpoint::Spin(_)
        | Endpoint::Mq(_) => {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("tarpc over {endpoint}")).into())
        }
    };
    Ok(Tarpc(client))
}
