//! Load generator for `scripts/bench-refused-storm.sh`: connects to a closed
//! loopback port as fast as it can from N threads, for a bounded number of
//! connects, and prints how many it made, how many were refused, and the
//! rate. Usage: refused_storm <port> <total-connects> [threads]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|s| s.parse().ok()).expect("port");
    let total: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .expect("total connects");
    let threads: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let refused = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (refused, other) = (refused.clone(), other.clone());
            let n = total / threads + u64::from(t < total % threads);
            std::thread::spawn(move || {
                for _ in 0..n {
                    match TcpStream::connect(addr) {
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    let refused = refused.load(Ordering::Relaxed);
    println!(
        "connects={total} refused={refused} other={} seconds={secs:.3} rate_per_s={:.0}",
        other.load(Ordering::Relaxed),
        total as f64 / secs
    );
}
