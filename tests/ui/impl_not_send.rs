use std::rc::Rc;

use rpc::service;

#[service]
pub trait Counter {
    async fn next(&self) -> u64;
}

struct Local;

// The server runs handlers on other threads: a future holding an `Rc` across an await is refused,
// and the error points back at the declaration that requires `Send`.
impl Counter for Local {
    async fn next(&self) -> u64 {
        let count = Rc::new(1);
        std::future::ready(()).await;
        *count
    }
}

fn main() {}
