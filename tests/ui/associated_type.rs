use rpc::service;

#[service]
pub trait Source {
    type Item;
    async fn next(&self) -> Option<u64>;
}

fn main() {}
