//! Byte payloads (`rpc_core::bytes::Bytes`) reach a handler as a slice of the request frame the
//! server engine received, not as a copy; the same service run over a real byte stream.

mod common;
use common::pair_buffered;

use rpc_core::bytes::{Bytes, SHARE_MIN};
use rpc_core::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use rpc_core::service::{decode_args, handler, unknown_method, Call, CallSetup, Service};
use rpc_core::wire::RemoteError;
use rpc_core::{CallOptions, Client, ClientOptions, Server};

static METHODS: [MethodDescriptor; 1] =
    [MethodDescriptor { name: "inspect", id: method_id("inspect"), signature: "(Bytes) -> (bool, u64)" }];
static SHARE: ServiceDescriptor = ServiceDescriptor { name: "Share", methods: &METHODS };

struct Share;

impl Service for Share {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &SHARE
    }

    /// Answers whether the payload lies inside the request's own bytes (`args` is part of the
    /// frame the engine received), and the sum of its bytes.
    fn call(&self, method: u32, args: &[u8], _setup: &mut CallSetup<'_>) -> Result<Call, RemoteError> {
        if method != method_id("inspect") {
            return Err(unknown_method(method));
        }
        let (data,): (Bytes,) = decode_args(args)?;
        let shared = args.as_ptr_range().contains(&data.as_ptr());
        let sum = data.iter().map(|&b| u64::from(b)).sum::<u64>();
        Ok(handler(async move { (shared, sum) }))
    }
}

#[tokio::test]
async fn a_byte_argument_shares_the_received_frame() {
    let (client_side, server_side) = pair_buffered(1 << 20, 4096);
    let server = tokio::spawn(async move { Server::new().add_service(Share).serve_connection(server_side).await });
    let client = Client::handshake(client_side, &SHARE, ClientOptions::default()).await.unwrap();
    let inspect = &METHODS[0];
    for len in [SHARE_MIN, 100_000] {
        let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let sum = data.iter().map(|&b| u64::from(b)).sum::<u64>();
        let answer: (bool, u64) = client.call(inspect, &(data,), &CallOptions::new()).await.unwrap();
        assert_eq!(answer, (true, sum), "{len} bytes");
    }
    // Shorter ones are copied (so they do not keep a frame alive).
    let answer: (bool, u64) =
        client.call(inspect, &(Bytes::from(vec![1u8; SHARE_MIN - 1]),), &CallOptions::new()).await.unwrap();
    assert_eq!(answer, (false, SHARE_MIN as u64 - 1));
    drop(client);
    server.await.unwrap();
}
