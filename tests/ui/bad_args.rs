use rpc::service;

#[service(nmae = "calc.v1.Calculator", crate = "not a path")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
