//! The streaming example's service, shared by `watch_server`, `watch_client` and the demo: a
//! monitor of named readings with one method of each streaming kind. Each example uses a
//! different part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rpc::service;
use serde::{Deserialize, Serialize};

/// One reading of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What was read.
    pub key: String,
    /// The reading's number in its stream, from 0.
    pub seq: u64,
    /// The value read (a made-up sensor: it wanders between 10 and 30).
    pub value: f64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
}

impl Event {
    fn read(key: String, seq: u64, started: Instant) -> Self {
        let phase = seq as f64 * 0.7 + key.len() as f64;
        Event { key, seq, value: 20.0 + 10.0 * phase.sin(), uptime_ms: started.elapsed().as_millis() as u64 }
    }
}

/// The application error of `upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum UploadError {
    /// The upload had no bytes at all.
    #[error("nothing to store: the upload {0:?} was empty")]
    Empty(String),
    /// The upload went past the server's limit; the server stopped reading it there.
    #[error("the upload {name:?} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The upload's name.
        name: String,
        /// The limit, in bytes.
        limit: u64,
    },
}

/// How far apart `watch` sends its readings.
pub const TICK: Duration = Duration::from_millis(100);
/// The largest upload the server accepts.
pub const UPLOAD_LIMIT: u64 = 64 << 20;

/// A monitor, callable from another process, whose answers (and arguments) are streams.
#[service]
pub trait Monitor {
    /// Readings of `key`, one every [`TICK`], until the client drops the stream (server
    /// streaming).
    async fn watch(&self, key: String) -> rpc::Stream<Event>;
    /// The last `n` readings of `key`, all at once (server streaming, as fast as it flows).
    async fn history(&self, key: String, n: u64) -> rpc::Stream<Event>;
    /// Stores the chunks of `name`; the number of bytes stored (client streaming).
    async fn upload(&self, name: String, chunks: rpc::Stream<rpc::Bytes>) -> Result<u64, UploadError>;
    /// The current reading of each key the client sends, as it sends them (both ways).
    async fn lookup(&self, keys: rpc::Stream<String>) -> rpc::Stream<Event>;
}

/// The server's implementation.
#[derive(Clone)]
pub struct Sensors {
    started: Instant,
}

impl Sensors {
    /// A monitor whose uptime starts now.
    pub fn new() -> Self {
        Sensors { started: Instant::now() }
    }
}

impl Monitor for Sensors {
    async fn watch(&self, key: String) -> rpc::Stream<Event> {
        let (tx, events) = rpc::Stream::channel(4);
        let started = self.started;
        // The producer is a task of its own; when the client drops the stream, the next send
        // fails and the task ends.
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            for seq in 0.. {
                ticks.tick().await;
                if tx.send(Event::read(key.clone(), seq, started)).await.is_err() {
                    return;
                }
            }
        });
        events
    }

    async fn history(&self, key: String, n: u64) -> rpc::Stream<Event> {
        let started = self.started;
        rpc::Stream::from_iter((0..n).map(move |seq| Event::read(key.clone(), seq, started)))
    }

    async fn upload(&self, name: String, mut chunks: rpc::Stream<rpc::Bytes>) -> Result<u64, UploadError> {
        let mut stored = 0u64;
        while let Some(chunk) = chunks.next().await {
            stored += chunk.len() as u64;
            if stored > UPLOAD_LIMIT {
                // Returning drops `chunks`, which tells the client to stop sending.
                return Err(UploadError::TooLarge { name, limit: UPLOAD_LIMIT });
            }
        }
        if stored == 0 {
            return Err(UploadError::Empty(name));
        }
        Ok(stored)
    }

    async fn lookup(&self, keys: rpc::Stream<String>) -> rpc::Stream<Event> {
        let started = self.started;
        rpc::Stream::new(keys.enumerate().map(move |(seq, key)| Event::read(key, seq as u64, started)))
    }
}
