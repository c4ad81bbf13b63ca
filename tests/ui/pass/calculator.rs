//! The README's Calculator, with the client types used the way users use them.

use std::time::Duration;

use rpc::service;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("division by zero")]
pub struct MathError;

#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    fn version(&self) -> String;
    async fn ping(&self);
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError)
        } else {
            Ok(a / b)
        }
    }
    fn version(&self) -> String {
        "1".into()
    }
    async fn ping(&self) {}
}

#[service(name = "calc.v1.Calculator", crate = "::rpc")]
pub(crate) trait Renamed {
    async fn echo(&self, text: String) -> String;
}

fn assert_send<T: Send>(_: &T) {}

// Never called: it only has to type-check.
#[allow(dead_code)]
async fn client_side() -> Result<(), Box<dyn std::error::Error>> {
    let calc = CalculatorClient::connect("tcp://127.0.0.1:12345").await?;
    let sum: Result<i64, rpc::RpcError> = calc.add(1, 2).await;
    let quotient: Result<i64, rpc::CallError<MathError>> = calc.div(1, 0).await;
    match quotient {
        Ok(_) | Err(rpc::CallError::App(MathError)) | Err(rpc::CallError::Rpc(_)) => {}
    }
    let version: String = calc.with_timeout(Duration::from_millis(50)).version().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let (): () = calc.with_deadline(deadline).ping().await?;
    let options = rpc::CallOptions::default().timeout(Duration::from_secs(1));
    let configured = calc.with_options(options);
    let future = configured.add(sum?, version.len() as i64);
    assert_send(&future);
    future.await?;
    let _: &rpc::Client = calc.rpc_client();
    let again = CalculatorClient::from_client(calc.rpc_client().clone());
    drop(again.clone());
    Ok(())
}

fn main() {
    let server: CalculatorServer<Calc> = Calc.into_service();
    let shared = CalculatorServer::from_arc(std::sync::Arc::new(Calc));
    let services: Vec<Box<dyn rpc::Service>> = vec![Box::new(server.clone()), Box::new(shared)];
    assert_eq!(services[0].descriptor().name, "Calculator");
    assert_eq!(services[1].descriptor().methods.len(), 4);

    let d = CalculatorClient::DESCRIPTOR;
    let names: Vec<_> = d.methods.iter().map(|m| m.name).collect();
    assert_eq!(names, ["add", "div", "version", "ping"]);
    let signatures: Vec<_> = d.methods.iter().map(|m| m.signature).collect();
    assert_eq!(signatures, ["(i64, i64) -> i64", "(i64, i64) -> Result<i64, MathError>", "() -> String", "() -> ()"]);
    for m in d.methods {
        assert_eq!(m.id, rpc::__private::method_id(m.name));
    }

    assert_eq!(RenamedClient::DESCRIPTOR.name, "calc.v1.Calculator");
    assert_eq!(RenamedClient::DESCRIPTOR.methods[0].signature, "(String) -> String");
    let _ = format!("{server:?}");
}
