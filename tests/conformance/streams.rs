//! Streaming calls, checked on every transport line: server, client and bidirectional streams,
//! application errors in items, backpressure, cancellation both ways, deadlines, a server killed
//! or shut down mid-stream, and unary calls answered while a stream saturates the connection.

use super::*;
use rpc_tests::StreamsClient;

/// The items `count` sends, in order, and nothing after.
pub(super) async fn streams_server_stream_in_order(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let mut items = streams.count(1000, 3, 0).await.unwrap();
    let mut expected = 0;
    while let Some(item) = items.next().await {
        let (i, pad) = item.unwrap();
        assert_eq!((i, &pad[..]), (expected, &[0x5a; 3][..]));
        expected += 1;
    }
    assert_eq!(expected, 1000);
    assert!(items.next().await.is_none(), "a stream stays ended");
    // An empty stream ends at once; an application error is an item, kept apart from RpcError.
    assert!(streams.count(0, 0, 0).await.unwrap().next().await.is_none());
    let mut fallible = streams.fallible(3).await.unwrap();
    for i in 0..3 {
        assert_eq!(fallible.next().await.unwrap().unwrap(), Ok(i));
    }
    assert_eq!(fallible.next().await.unwrap().unwrap(), Err(MathError::DivisionByZero));
    assert!(fallible.next().await.is_none());
}

/// A client stream is summed; a handler that stops reading early answers, and the client's
/// endless stream stops (the call completes although the stream never ends).
pub(super) async fn streams_client_stream(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let sum = streams.sum(u64::MAX, rpc::Stream::from_iter(1..=10_000u64)).await.unwrap();
    assert_eq!(sum, 10_000 * 10_001 / 2);
    assert_eq!(streams.sum(u64::MAX, rpc::Stream::empty()).await.unwrap(), 0);
    let endless = rpc::Stream::from_iter(1u64..);
    let first = tokio::time::timeout(Duration::from_secs(10), streams.sum(3, endless)).await;
    assert_eq!(first.expect("the handler's answer ends the call").unwrap(), 6);
    // The connection is fine afterwards.
    let calc = CalculatorClient::connect(&server.addr).await.unwrap();
    assert_eq!(calc.add(1, 2).await.unwrap(), 3);
    assert_eq!(streams.sum(u64::MAX, rpc::Stream::from_iter([5u64])).await.unwrap(), 5);
}

/// Both ways at once: every line comes back uppercased, in order, while more are being sent.
pub(super) async fn streams_bidirectional(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let (tx, lines) = rpc::Stream::channel(4);
    let mut replies = streams.shout(lines).await.unwrap();
    for i in 0..200 {
        tx.send(format!("line {i}")).await.unwrap();
        // Each reply arrives while the client's stream is still open.
        assert_eq!(replies.next().await.unwrap().unwrap(), format!("LINE {i}"));
    }
    drop(tx);
    assert!(replies.next().await.is_none(), "the reply stream ends after the client's");
    // Many streams on one connection at once.
    let calls = (0..16).map(|k| {
        let streams = streams.clone();
        async move {
            let lines: Vec<String> = (0..100).map(|i| format!("s{k} {i}")).collect();
            let mut replies = streams.shout(rpc::Stream::from_iter(lines.clone())).await.unwrap();
            for line in lines {
                assert_eq!(replies.next().await.unwrap().unwrap(), line.to_uppercase());
            }
            assert!(replies.next().await.is_none());
        }
    });
    futures_util::future::join_all(calls).await;
}

/// A consumer that reads one item per 100 ms holds back its producer: the server produces
/// about a window's worth of items ahead, not more; dropping the stream stops the producer.
pub(super) async fn streams_backpressure_and_cancel(addr: String, mode: Mode) {
    const PAD: u32 = 1024;
    let server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let (before, stopped_before) = streams.produced().await.unwrap();
    let mut items = streams.count(u64::MAX, PAD, 0).await.unwrap();
    for _ in 0..10 {
        items.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, _) = streams.produced().await.unwrap();
    let ahead = after - before;
    // Bound: the stream window (256 KiB) of ~1 KiB items, a frame of overshoot, the handler's
    // channel and the transport's buffers. Unbounded, the producer makes millions a second.
    let bound = (rpc::wire::DEFAULT_STREAM_WINDOW as u64 * 2) / u64::from(PAD) + 64;
    eprintln!("{}: a consumer reading 10 items in 1 s let the producer make {ahead} (bound {bound})", server.addr);
    assert!(ahead <= bound, "the producer ran {ahead} items ahead");
    let dropped_at = Instant::now();
    drop(items);
    wait_until(|| {
        let streams = streams.clone();
        async move { streams.produced().await.unwrap().1 > stopped_before }
    })
    .await;
    eprintln!("{}: the producer stopped {:?} after the stream was dropped", server.addr, dropped_at.elapsed());
    // The client's own stream: the handler stops reading after 3 items, the client keeps
    // offering; the call still ends, and the connection serves on.
    assert_eq!(streams.sum(3, rpc::Stream::from_iter(0u64..)).await.unwrap(), 3);
    assert_eq!(streams.count(2, 0, 0).await.unwrap().next().await.unwrap().unwrap().0, 0);
}

/// While one stream saturates the connection, unary calls on the same connection are still
/// answered promptly (the figure is printed; the benchmark measures it properly).
pub(super) async fn streams_unary_calls_while_a_stream_saturates(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let conn = rpc::transports::connect(&server.addr).await.unwrap();
    let client = rpc::Client::handshake(conn, StreamsClient::DESCRIPTOR, Default::default()).await.unwrap();
    let streams = StreamsClient::from_client(client);
    let mut items = streams.count(u64::MAX, 16 * 1024, 0).await.unwrap();
    let drained = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let drain = tokio::spawn({
        let drained = std::sync::Arc::clone(&drained);
        async move {
            while let Some(item) = items.next().await {
                item.unwrap();
                drained.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        // `produced` is a unary call on the same connection as the stream. A call stuck behind
        // the stream fails the check instead of hanging it.
        tokio::time::timeout(Duration::from_secs(10), streams.produced())
            .await
            .expect("a unary call beside a stream is answered")
            .unwrap();
        took.push(started.elapsed());
    }
    let before = drained.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = drained.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after > before && before > 0, "the stream did not flow beside the calls ({before}, then {after} items)");
    took.sort();
    eprintln!(
        "{}: unary calls beside a saturating stream: median {:?}, p99 {:?}",
        server.addr,
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
    drain.abort();
}

/// A deadline covers the whole stream: an endless one ends with `DeadlineExceeded`.
pub(super) async fn streams_deadline_ends_the_stream(addr: String, mode: Mode) {
    let server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let started = Instant::now();
    let mut items = streams.with_timeout(Duration::from_millis(300)).count(u64::MAX, 0, 10).await.unwrap();
    let mut n = 0;
    let end = loop {
        match items.next().await {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    let took = started.elapsed();
    assert_eq!(end, RpcError::DeadlineExceeded, "after {n} items");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(5), "{took:?}");
    assert!(items.next().await.is_none());
    assert!(n > 0, "items arrived before the deadline");
}

/// A server killed mid-stream: the stream fails with `Disconnected`, promptly.
pub(super) async fn streams_killed_server_mid_stream(addr: String, mode: Mode) {
    let mut server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let mut items = streams.count(u64::MAX, 0, 1).await.unwrap();
    items.next().await.unwrap().unwrap();
    let killed = server.kill().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match items.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the stream ended normally after a kill"),
            }
        }
    })
    .await
    .expect("the stream notices the kill");
    let noticed = killed.elapsed();
    eprintln!("{}: a stream failed {noticed:?} after the SIGKILL: {end}", server.addr);
    assert!(matches!(end, RpcError::Disconnected { .. }), "{end:?}");
    assert!(noticed <= KILL_NOTICED_WITHIN, "the stream failed only {noticed:?} after the kill");
}

/// A server shut down mid-stream ends the stream with an error once its grace period is over,
/// and exits cleanly.
pub(super) async fn streams_shutdown_mid_stream(addr: String, mode: Mode) {
    let mut server = TestServer::start(&addr, mode).await;
    let streams = StreamsClient::connect(&server.addr).await.unwrap();
    let mut items = streams.count(u64::MAX, 0, 5).await.unwrap();
    items.next().await.unwrap().unwrap();
    let reader = tokio::spawn(async move {
        loop {
            match items.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        }
    });
    assert!(server.terminate().await, "the server exits cleanly");
    let end = tokio::time::timeout(Duration::from_secs(10), reader).await.expect("the stream ends").unwrap();
    eprintln!("{}: a stream at shutdown ended with {end:?}", server.addr);
    assert!(
        matches!(end, Some(RpcError::Cancelled) | Some(RpcError::Disconnected { .. })),
        "expected the stream to fail, got {end:?}"
    );
}
