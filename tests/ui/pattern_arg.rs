use rpc::service;

#[service]
pub trait Geometry {
    async fn distance(&self, (x, y): (f64, f64)) -> f64;
}

fn main() {}
