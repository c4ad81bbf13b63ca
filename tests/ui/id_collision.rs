use rpc::service;

// FNV-1a of these two names is the same 32-bit value.
#[service]
pub trait Unlucky {
    async fn set_71891(&self);
    async fn add_60500(&self);
}

fn main() {}
