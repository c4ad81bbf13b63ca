use rpc::service;

#[service]
pub trait Repository<T> {
    async fn count(&self) -> u64;
}

fn main() {}
