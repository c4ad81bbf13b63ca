//! The reflection service through the Rust API: what it describes, and that
//! `ServerOptions::reflection(false)` turns it off.

use rpc::reflection::{self, REFLECTION_SERVICE};
use rpc::{CallOptions, RpcError, ServerOptions};
use rpc_cli::demo::{Calc, Calculator, CalculatorClient};

async fn serve(name: &str, options: ServerOptions) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let listener = rpc::listen(&format!("mem://{name}")).await.unwrap();
    let server = rpc::Server::new().with_options(options).add_service(Calc.into_service());
    tokio::spawn(server.serve(listener))
}

#[tokio::test]
async fn the_description_lists_each_service_with_its_schema() {
    let task = serve("reflection-on", ServerOptions::new().identity("calc", Some("1.2.3".into()))).await;
    let client = rpc::connect_service("mem://reflection-on", &reflection::DESCRIPTOR).await.unwrap();
    let d = reflection::describe(&client, &CallOptions::new()).await.unwrap();
    assert_eq!((d.server_name.as_str(), d.server_version.as_deref()), ("calc", Some("1.2.3")));
    assert_eq!(d.schema_version, rpc::schema::SCHEMA_VERSION);
    assert_eq!(d.protocol_version, rpc::wire::PROTOCOL_VERSION);
    let names: Vec<_> = d.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Calculator", REFLECTION_SERVICE]);
    assert_eq!(&d.services[0], CalculatorClient::schema());
    let div = d.services[0].method("div").unwrap();
    assert_eq!(div.docs.trim(), "Divides `a` by `b`; fails on a zero divisor.");
    assert_eq!(div.error, Some(rpc::schema::Type::Named("MathError".into())));
    reflection::ping(&client, &CallOptions::new()).await.unwrap();
    task.abort();
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let task = serve("reflection-off", ServerOptions::new().reflection(false)).await;
    let err = rpc::connect_service("mem://reflection-off", &reflection::DESCRIPTOR).await.unwrap_err();
    assert!(matches!(err, RpcError::UnknownService { .. }), "{err:?}");
    // The user's services are still there.
    let calc = CalculatorClient::connect("mem://reflection-off").await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    task.abort();
}
