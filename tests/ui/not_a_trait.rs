use rpc::service;

#[service]
pub struct Calculator;

fn main() {}
