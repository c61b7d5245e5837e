//! Simulates N agents against a running controller: one hello and one
//! heartbeat each, over loopback HTTP/1.1 (one connection per request).
//! Bounded: exactly 2 × N requests, each with 10 s timeouts.
//!
//! `cargo run --example controller_load -- 127.0.0.1:8080 1000 [TOKEN]`
//! (`scripts/bench-controller.sh` starts a controller and runs this.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tapio::wire::v1::{Heartbeat, Hello};

fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let line = String::from_utf8_lossy(&raw[..raw.len().min(32)]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {line}")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: controller_load ADDR N [TOKEN]")?
        .parse()?;
    let n: usize = args
        .next()
        .ok_or("usage: controller_load ADDR N [TOKEN]")?
        .parse()?;
    let token = args.next();
    let observers: Vec<String> = ["network", "container", "storage", "node"]
        .map(String::from)
        .to_vec();
    let mut failures = 0usize;
    for i in 0..n {
        let id = format!("01SIMULATEDAGENT{i:010}");
        let hello = Hello::new(
            &id,
            format!("node-{i:04}"),
            "0.1.0",
            "6.8.0-sim",
            observers.clone(),
        );
        let hb = Heartbeat::unconfigured(&id, Default::default(), Default::default());
        for (path, body) in [
            ("/v1/agents/hello", serde_json::to_vec(&hello)?),
            ("/v1/agents/heartbeat", serde_json::to_vec(&hb)?),
        ] {
            match post(addr, path, token.as_deref(), &body) {
                Ok(200) => {}
                Ok(code) => {
                    failures += 1;
                    eprintln!("{path} for {id}: HTTP {code}");
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("{path} for {id}: {e}");
                }
            }
        }
    }
    println!(
        "agents simulated: {n}, requests: {}, failures: {failures}",
        2 * n
    );
    if failures > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}
