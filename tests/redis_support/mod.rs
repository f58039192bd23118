//! A private `redis-server` for the Rust tests (the contract suite in `tests/contract/`).
//!
//! Each test starts its own server on a free loopback port (never the shared 6379) and kills it on
//! drop. Without `redis-server` on PATH the tests print a note and pass, unless `CI` is set.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private redis-server, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Start on a free port with extra server arguments; `None` means skip the test.
    pub fn start(extra: &[&str]) -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        Self::start_on(port, extra)
    }

    /// Start on `port` (reused to simulate a restart); `None` means skip the test.
    pub fn start_on(port: u16, extra: &[&str]) -> Option<Server> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("CI").is_some() => panic!("redis-server unavailable: {e}"),
            Err(e) => {
                eprintln!("skipping: cannot start redis-server ({e}); set CI=1 to make this fail");
                return None;
            }
        };
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    /// Plain URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A raw connection for poking at the server behind the broker's back.
    pub async fn raw(&self) -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
