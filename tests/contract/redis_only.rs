//! Redis-only tests: what memory:// has no counterpart for (URLs, authentication, losing and
//! regaining the connection, the server's script cache).

use std::time::{Duration, Instant};

use _core::broker::redis::RedisBroker;
use _core::errors::Error;

use crate::harness::*;
use crate::redis_support::Server;

/// memory:// keeps no server-side script cache, so there is nothing to flush there.
#[tokio::test]
async fn script_flush_between_calls_is_invisible() {
    let Some(c) = Ctx::redis().await else { return };
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let () = c.raw(&["SCRIPT", "FLUSH"]).await;
    let l = fetch(b, 1).await.jobs.remove(0);
    let () = c.raw(&["SCRIPT", "FLUSH"]).await;
    assert_eq!(b.ack(Q, vec![ack_of(&l, b"")]).await.unwrap(), [true]);
}

#[tokio::test]
async fn urls_with_password_db_and_valkey_scheme_connect() {
    let Some(s) = Server::start(&["--requirepass", "sekret"]) else {
        return;
    };
    let url = format!("valkey://:sekret@127.0.0.1:{}/3", s.port);
    let b = RedisBroker::open(&url).await.unwrap();
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let client = ::redis::Client::open(format!("redis://:sekret@127.0.0.1:{}/3", s.port)).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let exists: bool = ::redis::cmd("EXISTS")
        .arg("asyncq:{q#0}:job:a")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(exists, "job written to db 3");
    let wrong = format!("redis://:nope@127.0.0.1:{}", s.port);
    assert!(matches!(
        RedisBroker::open(&wrong).await,
        Err(Error::Redis(_))
    ));
    assert!(matches!(
        RedisBroker::open("redis://[bad").await,
        Err(Error::BadUrl(_))
    ));
}
#[tokio::test]
async fn connection_loss_is_an_error_and_the_broker_reconnects() {
    let Some(s) = Server::start(&[]) else { return };
    let port = s.port;
    let b = RedisBroker::open(&s.url()).await.unwrap();
    b.wait(Q, 10).await.unwrap();
    drop(s);
    assert!(matches!(b.now_ms().await, Err(Error::Redis(_))));
    assert!(matches!(b.wait(Q, 50).await, Err(Error::Redis(_))));

    let _s = Server::start_on(port, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.now_ms().await.is_err() {
        assert!(Instant::now() < deadline, "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    b.wait(Q, 1_000).await.unwrap();
}

/// The pub/sub connection that carries job-end notifications is killed under a waiting
/// result: the waiter is woken to read the state again, and a new connection carries the
/// next ending.
#[tokio::test]
async fn a_lost_notification_connection_wakes_waiters_and_comes_back() {
    let Some(c) = Ctx::redis().await else { return };
    let b = &c.b;
    b.enqueue(Q, vec![job("a", 1), job("b", 1)]).await.unwrap();
    let a_done = b.watch_end(Q, "a").await.unwrap();
    let killed: i64 = c.raw(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert_eq!(killed, 1, "one pub/sub connection: the broker's");
    let woken = tokio::time::timeout(Duration::from_secs(5), a_done).await;
    assert!(
        matches!(woken, Ok(Err(_))),
        "woken without a verdict: {woken:?}"
    );
    // Subscribed again (the broker retries the connection with backoff; 10 s is far beyond).
    let deadline = Instant::now() + Duration::from_secs(10);
    let b_done = loop {
        match b.watch_end(Q, "b").await {
            Ok(rx) => break rx,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no notification feed after 10 s: {e}"),
        }
    };
    let got = fetch(b, 2).await;
    let bj = got.jobs.iter().find(|j| j.id == "b").unwrap();
    b.ack(Q, vec![ack_of(bj, b"")]).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), b_done).await;
    assert!(matches!(heard, Ok(Ok(()))), "{heard:?}");
}
