use rpc::service;

// Every mistake is reported in one build, each at its own token.
#[service]
pub trait Everything<T> {
    type Output;
    async fn generic<U>(&self, value: U);
    async fn mutable(&mut self);
    async fn borrowed(&self, name: &str) -> String;
    async fn opaque(&self) -> impl Sized;
    async fn with_body(&self) {}
    async fn with_timeout(&self);
    async fn destructured(&self, (a, b): (u8, u8));
}

fn main() {}
