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

/// The ACL rules of docs/security.md (kept in docs/acl/, read here), for `user` with password
/// `<user>-secret`.
async fn acl_user(s: &Server, user: &str, rules: &str) -> String {
    let mut cmd = ::redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(format!(">{user}-secret"));
    for rule in rules.split_whitespace() {
        cmd.arg(rule);
    }
    let () = cmd.query_async(&mut s.raw().await).await.unwrap();
    format!("redis://{user}:{user}-secret@127.0.0.1:{}", s.port)
}

fn refused<T: std::fmt::Debug>(r: _core::errors::Result<T>) -> bool {
    let refused = matches!(&r, Err(e) if e.to_string().contains("NoPerm"));
    if !refused {
        eprintln!("not refused: {r:?}");
    }
    refused
}

#[tokio::test]
async fn the_documented_acls_let_a_producer_enqueue_and_read_but_not_run_jobs() {
    use _core::broker::{ProgressReport, Want, WorkerInfo};
    let Some(s) = Server::start(&[]) else { return };
    let producer = acl_user(&s, "producer", include_str!("../../docs/acl/producer.acl")).await;
    let worker = acl_user(&s, "worker", include_str!("../../docs/acl/worker.acl")).await;
    let p = RedisBroker::open(&producer).await.unwrap();
    let w = RedisBroker::open(&worker).await.unwrap();

    // A producer enqueues, reads jobs, waits for results, follows events and cancels.
    p.enqueue(Q, vec![job("a", 1), job("b", 1), job("c", 1)])
        .await
        .unwrap();
    let ended = p.watch_end(Q, "a").await.unwrap();
    let mut events = p.watch_events(Q).await.unwrap();
    p.keep_watch(Q, 60_000).await.unwrap();
    assert_eq!(
        p.cancel(Q, "c").await.unwrap(),
        _core::broker::CancelOutcome::Cancelled
    );

    // It cannot lease, record outcomes, reap or report progress: those scripts name keys
    // (the active and dead sets, the stats) its ACL does not grant.
    assert!(refused(p.fetch(Q, Want::jobs(1), 60_000, "p").await));
    assert!(refused(p.reap(Q, 60_000).await));

    // A worker does all of it.
    let me = WorkerInfo {
        id: "w".into(),
        info: "{}".into(),
        last_seen_ms: 0,
    };
    w.register_worker(&me, 10_000).await.unwrap();
    assert_eq!(w.workers().await.unwrap().len(), 1);
    w.server_check().await.unwrap();
    let got = w.fetch(Q, Want::jobs(2), 60_000, "w").await.unwrap();
    assert_eq!(got.jobs.len(), 2);
    let a = got.jobs.iter().find(|j| j.id == "a").unwrap();
    assert!(refused(p.ack(Q, vec![ack_of(a, b"r")]).await));
    let report = ProgressReport {
        lease: lease(a),
        fraction: 0.5,
        message: None,
    };
    assert!(refused(p.progress(Q, vec![report.clone()]).await));
    assert_eq!(w.progress(Q, vec![report]).await.unwrap(), [true]);
    assert_eq!(w.ack(Q, vec![ack_of(a, b"r")]).await.unwrap(), [true]);
    w.reap(Q, 60_000).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .is_ok(),
        "the producer heard the ending"
    );
    let info = p.job(Q, "a").await.unwrap().unwrap();
    assert_eq!(info.result.as_deref(), Some(&b"r"[..]));
    let heard = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert!(matches!(heard, Ok(Some(_))), "the producer hears events");
}

/// A throwaway certificate authority and, signed by it, a certificate for the server
/// (127.0.0.1) and one for a client, made with the `openssl` command in `dir`.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=asyncq test CA",
        ],
    ]
    .concat());
    for name in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN=asyncq test {name}");
        run(&[
            &["req"][..],
            &ec,
            &["-keyout", &key, "-out", &csr, "-subj", &subject],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }
}

#[tokio::test]
async fn tls_with_a_private_authority_and_a_client_certificate() {
    use _core::broker::Want;
    let dir = std::env::temp_dir().join(format!("asyncq-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let file = |f: &str| dir.join(f).display().to_string();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let tls = [
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "yes",
    ];
    let Some(s) = Server::start(&tls) else { return };
    let at = format!("rediss://127.0.0.1:{tls_port}/0");
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let url = format!("{at}?tls_ca={ca}&tls_cert={cert}&tls_key={key}");
    let b = RedisBroker::open(&url).await.unwrap();
    b.enqueue(Q, vec![job("a", 1)]).await.unwrap();
    let ended = b.watch_end(Q, "a").await.unwrap(); // the pub/sub connection, over TLS too
    b.wait(Q, 50).await.unwrap(); // and the blocking one
    let got = b.fetch(Q, Want::jobs(1), 60_000, "w").await.unwrap();
    assert_eq!(
        b.ack(Q, vec![ack_of(&got.jobs[0], b"")]).await.unwrap(),
        [true]
    );
    assert!(tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .is_ok());

    // The server asks for a client certificate; and the system does not trust our authority.
    assert!(RedisBroker::open(&format!("{at}?tls_ca={ca}"))
        .await
        .is_err());
    let without_ca = format!("{at}?tls_cert={cert}&tls_key={key}");
    assert!(RedisBroker::open(&without_ca).await.is_err());
    // Misuse is a clear error before any connection.
    for bad in [
        format!("redis://127.0.0.1:{}/0?tls_ca={ca}", s.port),
        format!("{at}?tls_cert={cert}"),
        format!("{at}?tls_ca={}", file("missing.pem")),
    ] {
        let err = RedisBroker::open(&bad).await.err().unwrap();
        assert!(matches!(err, Error::BadUrl(_)), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
