//! The library behind the `rpc` command: calling a server by its [schemas](rpc::schema)
//! (JSON in and out, [`codec`]), printing what it serves ([`render`]), and the example services
//! of `rpc-demo-server` ([`demo`]).

#![warn(missing_docs)]

pub mod codec;
pub mod demo;
pub mod render;
