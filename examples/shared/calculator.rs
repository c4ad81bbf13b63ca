//! The seed's service, shared by the add examples: the trait, its error type and one impl.
//! Each example uses a different part of it.
#![allow(dead_code)]

use rpc::service;
use serde::{Deserialize, Serialize};

/// The application error of `div`: a user's own serde + `Error` type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MathError {
    /// The divisor was zero.
    #[error("division by zero")]
    DivisionByZero,
}

/// A calculator, callable from another process.
#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// The server's version.
    fn version(&self) -> String;
}

/// The server's implementation.
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_div(b).ok_or(MathError::DivisionByZero)
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}
