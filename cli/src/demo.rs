//! The services `rpc-demo-server` serves: `Calculator` (as in the examples) and `Inventory`,
//! whose types have every shape the schema knows (nested structs, enums with data, options,
//! maps, application errors, streams), to try `rpc list` and `rpc call` on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rpc::{service, Stream};
use serde::{Deserialize, Serialize};

/// The calculator of the examples.
#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`; fails on a zero divisor.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

/// The error of [`Calculator::div`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivisionByZero,
}

/// The implementation of [`Calculator`].
#[derive(Debug, Default, Clone)]
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivisionByZero)
    }
}

/// A shape, an enum with data of every kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A circle of radius `r`.
    Circle {
        /// The radius.
        r: f64,
    },
    /// A rectangle, width and height.
    Rect(u32, u32),
    /// No shape.
    Point,
}

/// The place an item is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// The aisle.
    pub aisle: u16,
    /// The shelf, if it has one.
    pub shelf: Option<char>,
}

/// An item of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The item's name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Where it is, if anywhere.
    pub location: Option<Location>,
    /// Free-form labels.
    pub labels: BTreeMap<String, i64>,
}

/// Why an inventory call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryError {
    /// No item by that name.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// An item of that name is already stored.
    Exists(String),
}

/// Items by name: a service of nested types.
#[service]
pub trait Inventory {
    /// Stores `item`; returns how many items are stored.
    async fn put(&self, item: Item) -> Result<u64, InventoryError>;
    /// The item called `name`.
    async fn get(&self, name: String) -> Result<Item, InventoryError>;
    /// The names of every item, each with its location.
    async fn list(&self) -> BTreeMap<String, Option<Location>>;
    /// The names of the items whose shape is `shape`'s kind, one at a time.
    async fn find(&self, shape: Shape) -> Stream<String>;
    /// Stores every item sent; returns how many were new.
    async fn put_all(&self, items: Stream<Item>) -> u64;
}

/// The implementation of [`Inventory`]: items in memory, shared by every connection.
#[derive(Debug, Default, Clone)]
pub struct Store {
    items: Arc<Mutex<BTreeMap<String, Item>>>,
}

fn same_kind(a: &Shape, b: &Shape) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl Inventory for Store {
    async fn put(&self, item: Item) -> Result<u64, InventoryError> {
        let mut items = self.items.lock().expect("not poisoned");
        if items.contains_key(&item.name) {
            return Err(InventoryError::Exists(item.name));
        }
        items.insert(item.name.clone(), item);
        Ok(items.len() as u64)
    }

    async fn get(&self, name: String) -> Result<Item, InventoryError> {
        self.items.lock().expect("not poisoned").get(&name).cloned().ok_or(InventoryError::NotFound { name })
    }

    async fn list(&self) -> BTreeMap<String, Option<Location>> {
        self.items.lock().expect("not poisoned").values().map(|i| (i.name.clone(), i.location.clone())).collect()
    }

    async fn find(&self, shape: Shape) -> Stream<String> {
        let names: Vec<String> = self
            .items
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|i| same_kind(&i.shape, &shape))
            .map(|i| i.name.clone())
            .collect();
        Stream::from_iter(names)
    }

    async fn put_all(&self, mut items: Stream<Item>) -> u64 {
        let mut new = 0;
        while let Some(item) = items.next().await {
            let mut stored = self.items.lock().expect("not poisoned");
            if !stored.contains_key(&item.name) {
                new += 1;
            }
            stored.insert(item.name.clone(), item);
        }
        new
    }
}

/// A server with both services.
pub fn server() -> rpc::Server {
    rpc::Server::new()
        .with_options(rpc::ServerOptions::new().identity("rpc-demo-server", Some(env!("CARGO_PKG_VERSION").to_owned())))
        .add_service(Calc.into_service())
        .add_service(Store::default().into_service())
}
