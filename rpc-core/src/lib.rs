//! The engine of the rpc framework: the wire protocol ([`wire`], no I/O), the transport traits
//! ([`transport`]), the client and server engines ([`client`], [`server`]), streaming calls and
//! their flow control ([`stream`]), and the errors a caller sees ([`error`]).
//!
//! Users normally depend on the `rpc` facade crate, which re-exports this crate together with the
//! `#[service]` macro and the transports. Data flows one way: generated stub → [`client::Client`]
//! → [`wire`] → [`transport`] → [`wire`] → [`server::Server`] → [`service::Service`] → user impl.

#![warn(missing_docs)]
// `deny`, not `forbid`: `loan` alone needs `unsafe` (memory a transport lends), and allows it for
// itself.
#![deny(unsafe_code)]

pub mod bytes;
pub mod client;
pub mod context;
pub mod descriptor;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
#[allow(unsafe_code)]
pub mod loan;
mod outbound;
pub mod reflection;
pub mod schema;
pub mod server;
pub mod service;
pub mod stream;
pub mod telemetry;
pub mod transport;
// Also for the transports' unit tests, which turn on `fuzzing` as a dev-dependency.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod wake_count;
pub mod wire;

pub use client::{CallOptions, Client, ClientOptions, Streaming};
pub use context::CallContext;
pub use error::{CallError, RpcError};
pub use loan::Loan;
pub use server::{Server, ServerOptions};
pub use stream::{Stream, StreamSender};
pub use telemetry::ServerStats;
