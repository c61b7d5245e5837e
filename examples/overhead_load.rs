//! Load generator for `scripts/bench-overhead.sh`: one healthy (or refused)
//! operation, repeated a bounded number of times, loopback or a local file
//! only. Prints `ops=<n> secs=<s> rate_per_s=<r>` so the script can divide
//! the kernel's BPF run time and the agent's CPU by the operations made.
//!
//! Usage:
//!   overhead_load connect <n>          loopback connect, 1-byte ping-pong, orderly close
//!   overhead_load refused <port> <n>   connect to a closed loopback port
//!   overhead_load fork <n>             fork + exec /bin/true + exit + wait
//!   overhead_load io <file> <n>        4 KiB O_DIRECT write + fdatasync

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, what: &str| -> String {
        args.get(i)
            .cloned()
            .unwrap_or_else(|| panic!("missing argument {i}: {what}"))
    };
    let num = |i: usize| -> u64 { arg(i, "count").parse().expect("a count") };
    let start = Instant::now();
    let ops = match arg(1, "mode").as_str() {
        "connect" => connect(num(2)),
        "refused" => refused(arg(2, "port").parse().expect("a port"), num(3)),
        "fork" => fork(num(2)),
        "io" => io(&arg(2, "file"), num(3)),
        m => panic!("unknown mode {m}"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ops={ops} secs={secs:.3} rate_per_s={:.0}",
        ops as f64 / secs
    );
}

/// A server thread answers each connection's byte and waits for the
/// client's FIN before closing, so both sides close in order (no RST).
fn connect(n: u64) -> u64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = listener.accept().expect("accept");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("server read");
            s.write_all(&b).expect("server write");
            // Read to EOF: the client closes first.
            let _ = s.read(&mut b);
        }
    });
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(b"x").expect("client write");
        let mut b = [0u8; 1];
        c.read_exact(&mut b).expect("client read");
        let _ = c.shutdown(Shutdown::Write);
        let _ = c.read(&mut b); // the server's FIN
    }
    server.join().expect("server thread");
    n
}

fn refused(port: u16, n: u64) -> u64 {
    let mut refusals = 0;
    for _ in 0..n {
        if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                refusals += 1;
            }
        }
    }
    refusals
}

fn fork(n: u64) -> u64 {
    for _ in 0..n {
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("spawn /bin/true");
        assert!(status.success());
    }
    n
}

/// O_DIRECT needs an aligned buffer: a 4 KiB block inside an 8 KiB Vec.
fn io(path: &str, n: u64) -> u64 {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .expect("open O_DIRECT");
    let mut raw = vec![0xa5u8; 8192];
    let off = raw.as_ptr().align_offset(4096);
    let block = &mut raw[off..off + 4096];
    use std::os::unix::fs::FileExt;
    for i in 0..n {
        block[0] = i as u8;
        f.write_all_at(block, (i % 256) * 4096).expect("write");
        f.sync_data().expect("fdatasync");
    }
    n
}
