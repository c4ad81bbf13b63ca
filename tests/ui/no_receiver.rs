use rpc::service;

#[service]
pub trait Factory {
    fn create(name: String) -> u64;
}

fn main() {}
