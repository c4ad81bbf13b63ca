use rpc::service;

#[service]
pub trait Logger {
    async fn log(&self, message: impl Into<String>);
}

fn main() {}
