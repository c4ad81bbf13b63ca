use rpc::service;

#[service]
pub trait Lookup {
    async fn find(&self, keys: Vec<String>, hint: Option<&[u8]>) -> Option<String>;
    fn name(&self) -> &'static str;
}

fn main() {}
