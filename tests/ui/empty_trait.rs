use rpc::service;

#[service]
pub trait Nothing {}

fn main() {}
