use rpc::service;

#[service]
pub trait Versioned {
    fn version(&self) -> u32 {
        1
    }
}

fn main() {}
