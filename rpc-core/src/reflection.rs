//! The reflection service every server answers unless told not to
//! ([`ServerOptions::reflection`](crate::ServerOptions::reflection)): what the server serves,
//! with the [schema](crate::schema) of every method, so that a caller without the Rust traits
//! (the `rpc` tool, a client in another language) can list and call them.
//!
//! It is an ordinary [`Service`] named [`REFLECTION_SERVICE`], added by the server engine next to
//! the user's services, and reached like any other: a hello naming it, then calls of its one
//! methods, `describe() -> ServerDescription` and `ping()`. Being ordinary, its calls run behind
//! the server's [layers](crate::server::Server::layer) and are counted and traced like any other.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::client::{CallOptions, Client};
use crate::descriptor::{method_id, MethodDescriptor, ServiceDescriptor};
use crate::error::RpcError;
use crate::schema::{MethodKind, SchemaBuilder, ServiceSchema, SCHEMA_VERSION};
use crate::service::{decode_args, handler, unknown_method, Call, CallSetup, Service};
use crate::wire::RemoteError;

/// The name of the reflection service.
pub const REFLECTION_SERVICE: &str = "rpc.Reflection";

/// The reflection service's methods, as a client names them in its hello.
pub static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: REFLECTION_SERVICE,
    methods: &[
        MethodDescriptor { name: "describe", id: method_id("describe"), signature: "() -> ServerDescription" },
        MethodDescriptor { name: "ping", id: method_id("ping"), signature: "() -> ()" },
    ],
};

/// What a server says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDescription {
    /// The version of the schema format ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The wire protocol's version ([`crate::wire::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The server's name ([`ServerOptions::identity`](crate::ServerOptions::identity); by
    /// default the executable's file name).
    pub server_name: String,
    /// The server's version, if it gave one.
    pub server_version: Option<String>,
    /// The version of this framework's engine.
    pub framework_version: String,
    /// Every service served, the reflection service included, sorted by name. A service
    /// without a schema (a hand-written [`Service`]) is listed with its methods' names and
    /// signatures only, their types [`Unknown`](crate::schema::Type::Unknown).
    pub services: Vec<ServiceSchema>,
}

/// The reflection service of one server.
pub(crate) struct Reflection {
    services: Vec<Arc<dyn Service>>,
    name: String,
    version: Option<String>,
    /// Built at the first call: tracing the schemas costs nothing until someone asks.
    description: OnceLock<ServerDescription>,
}

impl Reflection {
    pub(crate) fn new(services: Vec<Arc<dyn Service>>, name: String, version: Option<String>) -> Self {
        Reflection { services, name, version, description: OnceLock::new() }
    }

    fn describe(&self) -> ServerDescription {
        let mut services: Vec<ServiceSchema> = self.services.iter().map(|s| schema_of(&**s)).collect();
        services.push(own_schema().clone());
        services.sort_by(|a, b| a.name.cmp(&b.name));
        ServerDescription {
            schema_version: SCHEMA_VERSION,
            protocol_version: crate::wire::PROTOCOL_VERSION,
            server_name: self.name.clone(),
            server_version: self.version.clone(),
            framework_version: env!("CARGO_PKG_VERSION").to_owned(),
            services,
        }
    }
}

/// A service's schema, or what its descriptor tells of it.
fn schema_of(service: &dyn Service) -> ServiceSchema {
    if let Some(schema) = service.schema() {
        return schema.clone();
    }
    let descriptor = service.descriptor();
    SchemaBuilder::build(descriptor.name, "", |builder| {
        for m in descriptor.methods {
            let unknown = || crate::schema::Type::Unknown("the service has no schema".to_owned());
            builder.method(m, "", MethodKind::Unary, Vec::new(), None, unknown(), None);
        }
    })
}

/// The reflection service's own schema.
fn own_schema() -> &'static ServiceSchema {
    static SCHEMA: OnceLock<ServiceSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        SchemaBuilder::build(
            REFLECTION_SERVICE,
            " What the server serves, with the schema of every method.",
            own_methods,
        )
    })
}

fn own_methods(builder: &mut SchemaBuilder) {
    {
        let returns = builder.ty::<ServerDescription>();
        builder.method(
            &DESCRIPTOR.methods[0],
            " Describes the server and every service it serves.",
            MethodKind::Unary,
            Vec::new(),
            None,
            returns,
            None,
        );
        let unit = builder.ty::<()>();
        builder.method(
            &DESCRIPTOR.methods[1],
            " Answers at once: a round trip through the engine.",
            MethodKind::Unary,
            Vec::new(),
            None,
            unit,
            None,
        );
    }
}

impl Service for Reflection {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        &DESCRIPTOR
    }

    fn call(&self, method: u32, args: &[u8], _setup: &mut CallSetup<'_>) -> Result<Call, RemoteError> {
        let () = decode_args(args)?;
        if method == DESCRIPTOR.methods[0].id {
            let description = self.description.get_or_init(|| self.describe()).clone();
            Ok(handler(async move { description }))
        } else if method == DESCRIPTOR.methods[1].id {
            Ok(handler(async {}))
        } else {
            Err(unknown_method(method))
        }
    }

    fn schema(&self) -> Option<&'static ServiceSchema> {
        Some(own_schema())
    }
}

/// The default server name: the executable's file name.
pub(crate) fn default_server_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "rpc-server".to_owned())
}

/// One round trip through the server's engine, answered by the reflection service.
pub async fn ping(client: &Client, options: &CallOptions) -> Result<(), RpcError> {
    client.call::<(), ()>(&DESCRIPTOR.methods[1], &(), options).await
}

/// Asks the server behind `client` (a client whose hello named [`REFLECTION_SERVICE`], made
/// with [`DESCRIPTOR`]) to describe itself.
pub async fn describe(client: &Client, options: &CallOptions) -> Result<ServerDescription, RpcError> {
    client.call::<(), ServerDescription>(&DESCRIPTOR.methods[0], &(), options).await
}
