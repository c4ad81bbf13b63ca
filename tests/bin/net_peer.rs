//! `rpc-net-peer ADDR [--keepalive SECS]`: serves the network tests' `Peer` service on ADDR
//! (any transport; `tls://` takes its files from the address's query), prints
//! `listening <address>` once ready, and serves until killed.

#[path = "../net/peer_service.rs"]
mod peer_service;

use std::time::Duration;

use rpc::transports::TransportOptions;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = TransportOptions::new();
    let mut addr = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--keepalive" => {
                let secs: u64 = rest.next().and_then(|s| s.parse().ok()).expect("--keepalive SECS");
                options = options.keepalive(Duration::from_secs(secs));
            }
            other => addr = Some(other.to_owned()),
        }
    }
    let addr = addr.expect("usage: rpc-net-peer ADDR [--keepalive SECS]");
    let listener = match rpc::transports::listen_with(&addr, &options).await {
        Ok(listener) => listener,
        Err(e) => {
            println!("failed {e}");
            std::process::exit(1);
        }
    };
    println!("listening {}", listener.local_addr());
    use peer_service::Peer as _;
    let _ = rpc::Server::new().add_service(peer_service::PeerImpl.into_service()).serve(listener).await;
}
