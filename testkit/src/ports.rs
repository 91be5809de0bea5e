//! Loopback ports for the processes a test or benchmark starts. A port is found by
//! binding port 0 and letting it go; this process never hands the same port out twice,
//! so a hundred servers started at once do not collide with each other.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// A free port on 127.0.0.1 that this process has not handed out before.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
}

/// `127.0.0.1:` a [`free_port`].
pub fn free_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}
