use rpc::service;

#[service]
pub trait Network {
    async fn connect(&self, host: String) -> bool;
    async fn connect_with(&self, host: String, port: u16) -> bool;
}

fn main() {}
