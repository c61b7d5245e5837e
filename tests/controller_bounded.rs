//! The real `tapio controller` binary against hostile and unlucky clients
//! (issue 14 item 4): the connection limit, an over-limit declared
//! Content-Length, byte-by-byte headers, and SIGTERM with a half-sent
//! request open. Loopback only, port 0, every wait bounded; the precise
//! deadline behaviour (with small limits) is tested in `src/httpd.rs`.

use crate::common::Controller;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// Upper bound of any wait here: a failure if reached, never a figure.
const BOUND: Duration = Duration::from_secs(30);

/// Starts the controller on the default profile with `args`, under
/// `ulimit -n <nofile>` when given (via `sh -c ... exec`, so the child is
/// the controller itself).
fn start_with_nofile(nofile: Option<u32>, args: &[&str]) -> Controller {
    let profile = format!(
        "{}/examples/profiles/default.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            // $0 is the binary; "$@" is the profile, then `args`.
            "{}exec \"$0\" controller --listen 127.0.0.1:0 --profile \"$@\"",
            nofile
                .map(|n| format!("ulimit -n {n} && "))
                .unwrap_or_default()
        ))
        .arg(env!("CARGO_BIN_EXE_tapio"))
        .arg(&profile)
        .args(args);
    Controller::spawn(&mut cmd, BOUND)
}

fn start(args: &[&str]) -> Controller {
    start_with_nofile(None, args)
}

fn connect(c: &Controller) -> TcpStream {
    let s = TcpStream::connect_timeout(&c.addr, BOUND).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// Reads until the peer closes (or the read timeout, which fails).
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "connection still open ({e}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A keep-alive GET /v1/status; returns once the whole JSON body is in.
fn status_keep_alive(s: &mut TcpStream) -> String {
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return text.into_owned();
            }
        }
    }
}

#[test]
fn the_connection_limit_closes_the_excess_and_logs_it() {
    let c = start(&["--max-connections", "2"]);
    let mut a = connect(&c);
    let mut b = connect(&c);
    assert!(status_keep_alive(&mut a).starts_with("HTTP/1.1 200 "));
    assert!(status_keep_alive(&mut b).starts_with("HTTP/1.1 200 "));
    let mut third = connect(&c);
    let _ = third.write_all(b"GET /v1/status HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_to_close(&mut third), "", "closed unanswered");
    c.wait_log("connection limit 2 reached", BOUND);
    // The two held connections still work.
    assert!(status_keep_alive(&mut a).starts_with("HTTP/1.1 200 "));
}

#[test]
fn a_declared_huge_body_gets_413_in_the_wire_format_before_any_byte() {
    let c = start(&[]);
    let mut s = connect(&c);
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .unwrap();
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert_eq!(
        v["error"]["message"], "request body exceeds 1048576 bytes",
        "{body}"
    );
}

#[test]
fn byte_by_byte_headers_are_cut_by_the_header_deadline() {
    let c = start(&[]);
    let s = connect(&c);
    let mut w = s.try_clone().unwrap();
    // 200 ms a byte: 150 bytes would take the whole BOUND; the 5 s head
    // deadline must cut it long before.
    let writer = std::thread::spawn(move || {
        let head = b"GET /v1/status HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        for i in 0..150usize {
            if w.write_all(&[head.get(i).copied().unwrap_or(b'a')])
                .is_err()
            {
                return i;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        150
    });
    let mut r = s;
    assert_eq!(read_to_close(&mut r), "", "cut without an answer");
    let written = writer.join().unwrap();
    assert!(written < 150, "every byte was accepted");
}

#[test]
fn sigterm_with_a_half_sent_request_open_exits() {
    let mut c = start(&[]);
    let mut half = connect(&c);
    half.write_all(b"GET /v1/sta").unwrap();
    // Another full request proves the server is accepting (so the half
    // one is held by it, not still in the backlog).
    let mut probe = connect(&c);
    assert!(status_keep_alive(&mut probe).starts_with("HTTP/1.1 200 "));
    // SAFETY: kill takes plain integers; the child is ours and not yet reaped.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGTERM) };
    assert_eq!(c.wait_exit(BOUND), Some(0), "log:\n{}", c.log());
    assert!(c.log().contains("controller stopped"), "{}", c.log());
    assert_eq!(read_to_close(&mut half), "");
}

/// Issue 14 item 4's fd exhaustion, scaled down: under `ulimit -n 256`
/// with `--max-connections 100`, 150 silent sockets. The excess is closed
/// at once (logged), the held ones are cut by the head deadline, and the
/// controller never runs out of descriptors and answers again afterwards.
#[test]
fn an_idle_flood_under_a_low_fd_limit_is_shed_and_the_controller_recovers() {
    let c = start_with_nofile(Some(256), &["--max-connections", "100"]);
    let mut conns: Vec<TcpStream> = (0..150).map(|_| connect(&c)).collect();
    // Every one of them ends (closed at once, or cut after 5 s silent).
    for s in &mut conns {
        assert_eq!(read_to_close(s), "");
    }
    let mut s = connect(&c);
    assert!(status_keep_alive(&mut s).starts_with("HTTP/1.1 200 "));
    let log = c.log();
    // 50 refusals within moments: one line, not fifty (rate-limited).
    assert_eq!(
        log.matches("connection limit 100 reached").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("accept failed"), "ran out of fds:\n{log}");
}

#[test]
fn a_connection_limit_above_the_fd_limit_is_warned_about() {
    let c = start_with_nofile(Some(256), &[]);
    assert!(
        c.log()
            .contains("--max-connections 900 does not fit the file-descriptor limit 256"),
        "{}",
        c.log()
    );
    let c = start_with_nofile(Some(256), &["--max-connections", "150"]);
    assert!(!c.log().contains("does not fit"), "{}", c.log());
}
