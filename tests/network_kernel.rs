//! Real-kernel tests of the network observer: each test makes a real fault
//! (closed port, dropped SYNs, ICMP rejects, dropped segments, a queueing
//! delay), runs its own agent, and checks the occurrence field by field.
//! Faults other than plain loopback refusals are built inside a network
//! namespace the test creates (its own `lo`, nftables rules, sysctls and
//! qdisc), so nothing leaks to the host; every test uses its own ports.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn netns_inode(link: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(link).unwrap().ino()
}

fn of_type_port(t: &'static str, port: u16) -> impl Fn(&Value) -> bool {
    move |v| is_type(v, t) && dport(v) == u64::from(port)
}

/// The (first) connection timeout to `port`, waited for (bounded; 30 s
/// because once, under the full suite's load, 10 s after the connect's own
/// ETIMEDOUT was not enough, and the cause was never found).
fn timeout_to(agent: &Agent, port: u16) -> Value {
    agent.wait_for(
        "timeout",
        Duration::from_secs(30),
        of_type_port("kernel.network.connection_timeout", port),
    )
}

#[test]
fn closed_port_on_loopback_v4_and_v6_gives_one_refusal_each() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let p4 = closed_port("127.0.0.1");
    let p6 = closed_port("::1");
    let e4 = std::net::TcpStream::connect(("127.0.0.1", p4)).unwrap_err();
    let e6 = std::net::TcpStream::connect(("::1", p6)).unwrap_err();
    assert_eq!(e4.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(e6.kind(), std::io::ErrorKind::ConnectionRefused);

    let refused = "kernel.network.connection_refused";
    let v4 = agent.wait_for(
        "refused v4",
        Duration::from_secs(10),
        of_type_port(refused, p4),
    );
    let v6 = agent.wait_for(
        "refused v6",
        Duration::from_secs(10),
        of_type_port(refused, p6),
    );
    for (v, daddr, family) in [(&v4, "127.0.0.1", "ipv4"), (&v6, "::1", "ipv6")] {
        let d = &v["data"];
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["outcome"], "failure");
        assert_eq!(v["error"]["code"], "CONNECTION_REFUSED");
        assert_eq!(d["daddr"], daddr);
        assert_eq!(d["saddr"], daddr);
        assert_eq!(d["family"], family);
        assert_eq!(d["count"], 1);
        assert_eq!(d["cause"], "rst");
        assert_eq!(
            d["pid"],
            std::process::id(),
            "pid of the connecting process"
        );
        assert!(d["sport"].as_u64().unwrap() > 0);
        assert_eq!(
            d["netns"],
            netns_inode("/proc/self/ns/net"),
            "the host namespace"
        );
        assert!(d["config_generation"].as_u64().unwrap() >= 1);
        assert!(d["timestamp_ns"].as_u64().unwrap() > 1_700_000_000_000_000_000);
    }
    // Past the fold window: still exactly one per destination.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(agent.matching(of_type_port(refused, p4)).len(), 1);
    assert_eq!(agent.matching(of_type_port(refused, p6)).len(), 1);
}

#[test]
fn refusals_in_one_window_fold_into_counts_that_sum_exactly() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let p = closed_port("127.0.0.1");
    for _ in 0..50 {
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    }
    let refused = "kernel.network.connection_refused";
    agent.wait_for("folded refusals", Duration::from_secs(10), |v| {
        of_type_port(refused, p)(v) && v["data"]["count"].as_u64().unwrap_or(0) > 1
    });
    std::thread::sleep(Duration::from_millis(1200));
    let total: u64 = agent
        .matching(of_type_port(refused, p))
        .iter()
        .map(|v| v["data"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);
}

/// A refusal storm larger than the network ring holds between two drain
/// ticks (512 KiB is ~3,800 records; 100 ms of this storm is more) loses
/// nothing: BPF wakes the drain each time the queue crosses a quarter of
/// the ring, so every refusal ends up in a `count` and the ring lost no
/// record. (Submitting every record without a wake-up made this lose
/// records.)
#[test]
fn a_refusal_storm_wakes_the_drain_and_loses_nothing() {
    require_ebpf!();
    let mport = free_port();
    let agent = Agent::start("", &["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    let p = closed_port("127.0.0.1");
    const PER_THREAD: u64 = 20_000;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let e = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap_err();
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let refused = "kernel.network.connection_refused";
    let sum = || -> u64 {
        agent
            .matching(of_type_port(refused, p))
            .iter()
            .map(|v| v["data"]["count"].as_u64().unwrap())
            .sum()
    };
    let total = poll(Duration::from_secs(20), Duration::from_millis(200), || {
        Some(sum()).filter(|n| *n >= 2 * PER_THREAD)
    });
    assert_eq!(total, Some(2 * PER_THREAD), "refusals in counts: {}", sum());
    let text = get_ok(&format!("http://127.0.0.1:{mport}/metrics")).expect("metrics");
    assert_eq!(
        must_metric(&text, "tapio_lost_events_total{observer=\"network\"}"),
        0.0
    );
}

/// The RTT baseline set `rtt_judge` (network.bpf.c) picks for 127.0.0.1:`port`
/// in the namespace with inode `netns`: the same words, mixing and top bits.
fn rtt_set_of(netns: u32, port: u16) -> u64 {
    // struct rtt_dest as three little-endian words: netns, family (AF_INET)
    // and the port as the kernel keeps it (network order), then the address.
    let w0 = u64::from(netns) | 2 << 32 | u64::from(port.to_be()) << 48;
    let w1 = u64::from_le_bytes([127, 0, 0, 1, 0, 0, 0, 0]);
    let mut h = (w0 ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ w1).wrapping_mul(0x94D0_49BB_1331_11EB);
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h >> (64 - 10)
}

/// Five destinations whose baselines share one set of four: the fifth
/// replaces one, and that is counted, not silent.
#[test]
fn a_full_rtt_baseline_set_counts_the_destination_it_replaces() {
    require_ebpf!();
    let mport = free_port();
    let _agent = Agent::start("", &["--metrics-addr", &format!("127.0.0.1:{mport}")]);
    let ns = Netns::new("tprttset");
    let inode = netns_inode(&format!("/run/netns/{}", ns.name)) as u32;
    // Its own namespace: every port is free, so any five that share a set.
    let mut by_set = std::collections::HashMap::<u64, Vec<u16>>::new();
    let ports = (20_000u16..60_000)
        .find_map(|p| {
            let same = by_set.entry(rtt_set_of(inode, p)).or_default();
            same.push(p);
            (same.len() == 5).then(|| same.clone())
        })
        .expect("five ports in one of 1024 sets");
    let (_, out, err, _) = python_in(
        Some(&ns),
        &format!(
            "import socket
ls=[]
for p in {ports:?}:
  l=socket.socket()
  l.bind(('127.0.0.1',p))
  l.listen(1)
  ls.append(l)
for p,l in zip({ports:?},ls):
  c=socket.create_connection(('127.0.0.1',p))
  a,_=l.accept()
  c.sendall(b'x')
  a.recv(1)
  a.sendall(b'y')
  c.recv(1)
  c.close()
  a.close()
print('done')"
        ),
        Duration::from_secs(20),
    );
    assert_eq!(out.trim(), "done", "{err}");
    let series = "tapio_correlation_drops_total{observer=\"network\",reason=\"rtt_table_full\"}";
    let replaced = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let text = get_ok(&format!("http://127.0.0.1:{mport}/metrics"))?;
        metric(&text, series).filter(|n| *n >= 1.0)
    });
    assert!(
        replaced.is_some(),
        "{series} stayed 0 after five destinations in one set"
    );
}

/// One socket, two connects: the first refused, then, from another thread,
/// a second to another closed port. Each refusal names the thread that
/// made that connect: the first close hands its owner slot back, and the
/// second connect takes one again with the new thread's identity.
#[test]
fn a_socket_reused_for_a_second_connect_gets_its_new_owner() {
    if !require_ebpf("a_socket_reused_for_a_second_connect_gets_its_new_owner") {
        return;
    }
    let agent = Agent::start("", &[]);
    let p1 = closed_port("127.0.0.1");
    let p2 = closed_port("127.0.0.1");
    let (ok, out, err, pid) = python_in(
        None,
        &format!(
            "import socket, threading\n\
             s = socket.socket()\n\
             got = []\n\
             def go(port):\n  \
               try:\n    s.connect(('127.0.0.1', port))\n  \
               except OSError as e:\n    got.append('%d:%d' % (e.errno, threading.get_native_id()))\n\
             for p in ({p1}, {p2}):\n  \
               t = threading.Thread(target=go, args=(p,))\n  t.start()\n  t.join()\n\
             s.close()\n\
             print(' '.join(got))"
        ),
        Duration::from_secs(20),
    );
    assert!(ok, "{err}");
    let got: Vec<(i32, u64)> = out
        .split_whitespace()
        .map(|w| {
            let (e, t) = w.split_once(':').unwrap();
            (e.parse().unwrap(), t.parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), 2, "{out}");
    assert!(got.iter().all(|(e, _)| *e == libc::ECONNREFUSED), "{out}");
    assert_ne!(got[0].1, got[1].1, "two threads");
    // The connector's cgroup2 id is its cgroup directory's inode (the
    // kernfs id); python runs in this test's cgroup.
    let cgroup_id = {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup2 line")
            .to_string();
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .find_map(|root| std::fs::metadata(format!("{root}{path}")).ok())
            .expect("the cgroup2 mount")
            .ino()
    };
    let refused = "kernel.network.connection_refused";
    for (port, (_, tid)) in [p1, p2].into_iter().zip(&got) {
        let v = agent.wait_for(
            "a refusal of the reused socket",
            Duration::from_secs(10),
            of_type_port(refused, port),
        );
        assert_eq!(v["data"]["pid"], pid, "port {port}");
        assert_eq!(v["data"]["tid"], *tid, "port {port}: the connecting thread");
        assert_eq!(v["data"]["comm"], "python3", "port {port}");
        assert_eq!(v["data"]["cgroup_id"], cgroup_id, "port {port}");
        assert_eq!(v["data"]["count"], 1);
    }
}

const NFT_TABLE: &str = "nft add table inet tapiotest && nft add chain inet tapiotest in '{ type filter hook input priority 0; policy accept; }'";

/// A namespace of the test's own and a port number the host just handed
/// out: unlikely to collide with any other test run, even one in another
/// namespace.
fn ns_and_port(prefix: &str) -> (Netns, u16) {
    (Netns::new(prefix), closed_port("127.0.0.1"))
}

/// [`ns_and_port`], where SYNs to the port are dropped on input and a
/// connect gives up after one retry (~3 s).
fn syns_dropped(prefix: &str) -> (Netns, u16) {
    let (ns, port) = ns_and_port(prefix);
    ns.exec("sysctl -qw net.ipv4.tcp_syn_retries=1");
    ns.exec(&format!(
        "{NFT_TABLE} && nft add rule inet tapiotest in tcp dport {port} drop"
    ));
    (ns, port)
}

#[test]
fn unanswered_syn_is_a_timeout_not_a_refusal() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let (ns, port) = syns_dropped("tpto");
    let pid = timed_out_connect(&ns, "127.0.0.1", port);
    let v = timeout_to(&agent, port);
    assert_eq!(v["severity"], "error");
    assert_eq!(v["error"]["code"], "CONNECTION_TIMEOUT");
    assert_eq!(v["data"]["errno"], "ETIMEDOUT");
    assert_eq!(v["data"]["daddr"], "127.0.0.1");
    assert_eq!(
        v["data"]["pid"], pid,
        "pid of the connecting process, not the timer's"
    );
    assert_eq!(v["data"]["comm"], "python3");
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent
        .matching(of_type_port("kernel.network.connection_refused", port))
        .is_empty());
    let ours = |v: &Value| v["data"]["pid"] == pid;
    assert_eq!(
        agent
            .matching(|v| of_type_port("kernel.network.connection_timeout", port)(v) && ours(v))
            .len(),
        1
    );
}

#[test]
fn an_application_abandoning_its_connect_is_not_an_anomaly() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let (ns, port) = syns_dropped("tpab");
    let (_, out, _, _) = python_in(
        Some(&ns),
        &format!(
            "import socket\ns=socket.socket()\ns.settimeout(0.3)\ntry:\n  s.connect(('127.0.0.1',{port}))\nexcept OSError as e:\n  print(type(e).__name__)\ns.close()"
        ),
        Duration::from_secs(20),
    );
    assert_eq!(out.trim(), "TimeoutError");
    // Longer than the kernel's own timeout would have taken (~3 s).
    std::thread::sleep(Duration::from_secs(4));
    let any: Vec<Value> = agent.matching(|v| dport(v) == u64::from(port));
    assert!(any.is_empty(), "{any:#?}");
}

#[test]
fn icmp_answers_are_refused_by_icmp_or_unreachable() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let ns = Netns::new("tpic");
    let p_port = closed_port("127.0.0.1");
    let p_host = (0..100)
        .map(|_| closed_port("127.0.0.1"))
        .find(|p| *p != p_port)
        .expect("two distinct ports");
    ns.exec(&format!(
        "{NFT_TABLE} && nft add rule inet tapiotest in tcp dport {p_port} reject with icmp type port-unreachable && nft add rule inet tapiotest in tcp dport {p_host} reject with icmp type host-unreachable"
    ));
    let (_, out, _, pid) = python_in(
        Some(&ns),
        &format!(
            "import socket\nfor p in ({p_port},{p_host}):\n  s=socket.socket()\n  s.settimeout(10)\n  try:\n    s.connect(('127.0.0.1',p))\n  except OSError as e:\n    print(e.errno)\n  s.close()"
        ),
        Duration::from_secs(30),
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["111", "113"]
    );
    let ns_inode = ns
        .exec("readlink /proc/self/ns/net")
        .trim()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse::<u64>()
        .unwrap();
    let r = agent.wait_for(
        "icmp refusal",
        Duration::from_secs(10),
        of_type_port("kernel.network.connection_refused", p_port),
    );
    assert_eq!(r["data"]["cause"], "icmp");
    assert_eq!(r["data"]["netns"], ns_inode, "the test's own namespace");
    assert_eq!(r["data"]["pid"], pid);
    let u = agent.wait_for(
        "unreachable",
        Duration::from_secs(10),
        of_type_port("kernel.network.connection_unreachable", p_host),
    );
    assert_eq!(u["data"]["errno"], "EHOSTUNREACH");
    assert_eq!(u["severity"], "error");
    // nft's reject frees the SYN it answers: a local drop, named.
    assert_eq!(u["data"]["drop_reason"], "NETFILTER_DROP", "{u}");
    assert_eq!(u["data"]["drops"], 1, "{u}");
    assert!(agent
        .matching(of_type_port("kernel.network.connection_timeout", p_host))
        .is_empty());
}

/// Offset of `tcpi_total_retrans` in `struct tcp_info` (8 bytes of u8
/// fields, then 23 u32 before it).
const TCPI_TOTAL_RETRANS: usize = 100;

#[test]
fn dropped_segments_on_an_established_connection_give_a_retransmit_spike() {
    require_ebpf!();
    let agent = Agent::start(
        "[observers.network]\nretransmit_min_count = 3\nretransmit_window_ms = 10000\n",
        &[],
    );
    let (ns, port) = ns_and_port("tprt");
    ns.exec(NFT_TABLE);
    // One 1000-byte segment the peer never acknowledges: RTO retransmits
    // at ~0.2, 0.6, 1.4, 3.0 s. Once the kernel says 4, the client aborts
    // (SO_LINGER 0) well before the next one, so the kernel's total is
    // final. The rest of the spike window follows when it ends (10 s
    // after the threshold was crossed, ~1.4 s in).
    let prog = format!(
        "import socket,struct,sys,time\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind(('127.0.0.1',{port}))\nl.listen(1)\nc=socket.create_connection(('127.0.0.1',{port}))\na,_=l.accept()\nc.sendall(b'x'*100)\na.recv(100)\nprint('ready',flush=True)\nsys.stdin.readline()\nc.sendall(b'y'*1000)\ndef total():\n  return struct.unpack_from('I',c.getsockopt(socket.IPPROTO_TCP,socket.TCP_INFO,232),{TCPI_TOTAL_RETRANS})[0]\nfor _ in range(300):\n  if total()>=4: break\n  time.sleep(0.05)\nn=total()\nc.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))\nc.close()\nprint(n,flush=True)\nsys.stdin.readline()\n"
    );
    let mut child = KillOnDrop(ns.spawn("python3", &["-c", &prog]));
    let pid = child.0.id();
    let lines = line_channel(child.0.stdout.take().unwrap());
    let line = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(line.trim(), "ready");
    ns.exec(&format!(
        "nft add rule inet tapiotest in tcp dport {port} drop"
    ));
    write_stdin(&mut child.0, "go\n");
    let kernel_total: u64 = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("the client reports its total_retrans")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(kernel_total, 4, "RTO retransmits before the abort");
    let first = agent.wait_for(
        "retransmit spike",
        Duration::from_secs(15),
        of_type_port("kernel.network.retransmit_spike", port),
    );
    let d = &first["data"];
    assert_eq!(d["retransmits"], 3, "the first occurrence at the threshold");
    assert_eq!(d["count"], 3);
    assert_eq!(d["window_ms"], 10000);
    assert_eq!(
        d["pid"], pid,
        "pid of the connection's owner, not the timer's"
    );
    assert_eq!(d["comm"], "python3");
    assert_eq!(d["daddr"], "127.0.0.1");
    assert_eq!(first["error"]["code"], "RETRANSMIT_SPIKE");
    assert_eq!(first["outcome"], "degraded");
    // The rest of the window follows when the window ends.
    let spikes = settle(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || agent.matching(of_type_port("kernel.network.retransmit_spike", port)),
        |spikes| spikes.len() >= 2,
    );
    let counts: Vec<u64> = spikes
        .iter()
        .map(|v| v["data"]["retransmits"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![3, 1], "{spikes:#?}");
    assert_eq!(counts.iter().sum::<u64>(), kernel_total);
    assert_eq!(spikes[1]["data"]["pid"], pid);
    // And nothing more after the window's end.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        agent
            .matching(of_type_port("kernel.network.retransmit_spike", port))
            .len(),
        2
    );
}

#[test]
fn queueing_delay_raises_srtt_into_an_rtt_degradation() {
    require_ebpf!();
    let agent = Agent::start(
        "[observers.network]\nrtt_min_baseline_samples = 3\nrtt_spike_multiplier_permille = 3000\nrtt_spike_abs_us = 10000\n",
        &[],
    );
    let (ns, port) = ns_and_port("tprtt");
    // A second destination in the namespace (its own port space): it has
    // no baseline when the delay starts, so its slow connection starts
    // one and must not be judged against the first destination's.
    let fresh = if port < u16::MAX { port + 1 } else { port - 1 };
    // Small frames so the token bucket queues many packets (tbf drops
    // packets larger than its burst).
    ns.exec("ip link set lo mtu 1500");
    let prog = format!(
        r#"import socket,sys,threading,time
def serve(port):
    l=socket.socket()
    l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    l.bind(('127.0.0.1',port))
    l.listen(16)
    while True:
        a,_=l.accept()
        n=0
        while True:
            b=a.recv(65536)
            if not b: break
            n+=len(b)
        a.sendall(str(n).encode())
        a.close()
for p in ({port},{fresh}):
    threading.Thread(target=serve,args=(p,),daemon=True).start()
time.sleep(0.2)
def one(size,port={port}):
    c=socket.create_connection(('127.0.0.1',port))
    c.sendall(b'z'*size)
    c.shutdown(socket.SHUT_WR)
    r=c.recv(100)
    c.close()
    return r
for i in range(4):
    one(2000)
print('baseline',flush=True)
sys.stdin.readline()
print(one(400000,{fresh}).decode(),flush=True)
print(one(400000).decode(),flush=True)
"#
    );
    let mut child = KillOnDrop(ns.spawn("python3", &["-c", &prog]));
    let pid = child.0.id();
    let mut reader = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim(), "baseline");
    ns.exec("tc qdisc add dev lo root tbf rate 2mbit burst 3000 latency 400ms");
    write_stdin(&mut child.0, "go\n");
    let v = agent.wait_for(
        "rtt degradation",
        Duration::from_secs(30),
        of_type_port("kernel.network.rtt_degradation", port),
    );
    let d = &v["data"];
    let srtt = d["srtt_us"].as_u64().unwrap();
    let base = d["baseline_srtt_us"].as_u64().unwrap();
    assert!(srtt >= 10_000, "{v}");
    assert!(srtt >= 3 * base, "{v}");
    assert!(d["baseline_samples"].as_u64().unwrap() >= 3);
    assert_eq!(d["pid"], pid);
    assert_eq!(v["error"]["code"], "RTT_DEGRADATION");
    // The fresh destination's slow connection ended before this one: its
    // sample only started its own baseline.
    let other = agent.matching(of_type_port("kernel.network.rtt_degradation", fresh));
    assert!(other.is_empty(), "{other:#?}");
}

/// The server side of the reset scenarios: one listener per role, each
/// connection handled in its own thread.
const RESET_SERVER: &str = r#"import socket,struct,sys,threading,time
LINGER0=struct.pack('ii',1,0)
def abort(a):
    a.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,LINGER0)
    a.close()
def mid_request(a):
    a.recv(3)
    time.sleep(0.3)
    abort(a)
def unacked(a):
    time.sleep(0.5)
    abort(a)
def close_wait(a):
    a.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    abort(a)
def after_fin(a):
    while a.recv(100):
        pass
    abort(a)
def client_abort(a):
    try:
        while a.recv(100):
            pass
    except OSError:
        pass
roles=[mid_request,unacked,close_wait,after_fin,client_abort]
ports=[int(p) for p in sys.argv[1:]]
def serve(l,role):
    a,_=l.accept()
    role(a)
for p,role in zip(ports,roles):
    l=socket.socket()
    l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    l.bind(('127.0.0.1',p))
    l.listen(4)
    threading.Thread(target=serve,args=(l,role),daemon=True).start()
print('ready',flush=True)
time.sleep(30)
"#;

/// The client side, renamed so its comm differs from the server's: the
/// reset is processed in the server's close(), never the client's.
const RESET_CLIENT: &str = r#"import ctypes,socket,struct,sys,time
ctypes.CDLL(None).prctl(15,b'tapio-client',0,0,0)
p1,p2,p3,p4,p5=[int(p) for p in sys.argv[1:]]
def err(f):
    try:
        f()
        return 'none'
    except OSError as e:
        return str(e.errno)
c=socket.create_connection(('127.0.0.1',p1))
c.sendall(b'GET')
print(err(lambda: c.recv(10)),flush=True)
c=socket.create_connection(('127.0.0.1',p2))
c.sendall(b'y'*1000)
print(err(lambda: c.recv(10)),flush=True)
c=socket.create_connection(('127.0.0.1',p3))
c.recv(10)
time.sleep(0.6)
print(err(lambda: c.send(b'z')),flush=True)
c=socket.create_connection(('127.0.0.1',p4))
c.sendall(b'bye')
c.close()
time.sleep(0.5)
c=socket.create_connection(('127.0.0.1',p5))
c.sendall(b'x')
time.sleep(0.2)
c.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0))
c.close()
time.sleep(0.5)
"#;

#[test]
fn peer_resets_of_held_connections_are_reported_and_orphans_inbound_and_own_aborts_are_not() {
    require_ebpf!();
    let mport = closed_port("127.0.0.1");
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[],
    );
    let metrics = || {
        http_get(&format!("http://127.0.0.1:{mport}/metrics"))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let inbound_before = counter(&metrics(), "tapio_inbound_resets_total");
    let ns = Netns::new("tprst");
    let mut ports = Vec::new();
    while ports.len() < 5 {
        let p = closed_port("127.0.0.1");
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let [p_mid, p_unacked, p_cw, p_fin, p_abort] = ports[..] else {
        unreachable!()
    };
    // The peer never receives the 1000-byte write: only segments that
    // carry data are dropped (the handshake is ~60 bytes).
    ns.exec(&format!(
        "{NFT_TABLE} && nft add rule inet tapiotest in tcp dport {p_unacked} meta length gt 500 drop"
    ));
    let args: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut server_args = vec!["-c", RESET_SERVER];
    server_args.extend(args.iter().map(String::as_str));
    let mut server = KillOnDrop(ns.spawn("python3", &server_args));
    let server_pid = server.0.id();
    let lines = line_channel(server.0.stdout.take().unwrap());
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(10)).unwrap(),
        "ready"
    );
    let mut client_args = vec!["-c", RESET_CLIENT];
    client_args.extend(args.iter().map(String::as_str));
    let mut client = KillOnDrop(ns.spawn("python3", &client_args));
    let client_pid = client.0.id();
    let out = line_channel(client.0.stdout.take().unwrap());
    let errnos: Vec<String> = (0..3)
        .map(|_| out.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    // What the application saw: ECONNRESET twice, EPIPE from CLOSE_WAIT.
    assert_eq!(errnos, ["104", "104", "32"]);
    wait_child(&mut client.0, Duration::from_secs(15));

    let reset = |port: u16| {
        agent.wait_for(
            &format!("connection_reset to {port}"),
            Duration::from_secs(10),
            of_type_port("kernel.network.connection_reset", port),
        )
    };
    let v = reset(p_mid);
    let d = &v["data"];
    assert_eq!(v["severity"], "warning");
    assert_eq!(v["outcome"], "failure");
    assert_eq!(v["error"]["code"], "CONNECTION_RESET");
    assert_eq!(
        d["pid"], client_pid,
        "the connector, not the server's close()"
    );
    assert_ne!(d["pid"], server_pid);
    assert_eq!(d["comm"], "tapio-client");
    assert_eq!(d["state"], "ESTABLISHED");
    assert_eq!(d["errno"], "ECONNRESET");
    assert_eq!(d["unacked_bytes"], 0, "the peer acknowledged the request");
    assert_eq!(d["count"], 1);
    assert_eq!(d["daddr"], "127.0.0.1");
    assert_eq!(d["saddr"], "127.0.0.1");
    assert!(d["sport"].as_u64().unwrap() > 0);
    assert_eq!(d["netns"], netns_inode(&format!("/run/netns/{}", ns.name)));

    let d = reset(p_unacked)["data"].clone();
    assert_eq!(d["unacked_bytes"], 1000, "the dropped write");
    assert_eq!(d["state"], "ESTABLISHED");
    assert_eq!(d["pid"], client_pid);

    let d = reset(p_cw)["data"].clone();
    assert_eq!(d["state"], "CLOSE_WAIT");
    assert_eq!(d["errno"], "EPIPE");
    assert_eq!(d["unacked_bytes"], 0);

    // Quiet: the orphan (the client closed first) and the client's own
    // abort (its peer is an accepted socket; counted as inbound).
    std::thread::sleep(Duration::from_millis(1500));
    for p in [p_fin, p_abort] {
        let any = agent.matching(|v| dport(v) == u64::from(p));
        assert!(any.is_empty(), "port {p}: {any:#?}");
    }
    for p in [p_mid, p_unacked, p_cw] {
        let n: u64 = agent
            .matching(of_type_port("kernel.network.connection_reset", p))
            .iter()
            .map(|v| v["data"]["count"].as_u64().unwrap())
            .sum();
        assert_eq!(n, 1, "one reset to {p}");
    }
    let inbound = settle(
        Duration::from_secs(5),
        Duration::from_millis(200),
        || counter(&metrics(), "tapio_inbound_resets_total"),
        |inbound| *inbound > inbound_before,
    );
    assert!(
        inbound > inbound_before,
        "the client's abort reset the accepted socket: inbound {inbound_before} -> {inbound}\n{}",
        metrics()
    );
}

/// Packets an nft rule with a counter matched in `ns` (the first such rule).
fn nft_counter_packets(ns: &Netns) -> u64 {
    let text = ns.exec("nft list table inet tapiotest");
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{text}"))
}

/// A connect from `ns` to `addr:port` that ends in ETIMEDOUT (the caller
/// arranged it); returns the connecting process's pid.
fn timed_out_connect(ns: &Netns, addr: &str, port: u16) -> u32 {
    let (_, out, err, pid) = python_in(
        Some(ns),
        &format!(
            "import socket\ns=socket.socket()\ns.settimeout(30)\ntry:\n  s.connect(('{addr}',{port}))\nexcept OSError as e:\n  print(e.errno)"
        ),
        Duration::from_secs(40),
    );
    assert_eq!(out.trim(), "110", "python saw ETIMEDOUT ({err})");
    pid
}

#[test]
fn syns_dropped_by_the_clients_own_firewall_name_the_drop() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let (ns, port) = ns_and_port("tpdo");
    ns.exec("sysctl -qw net.ipv4.tcp_syn_retries=1");
    ns.exec(&format!(
        "nft add table inet tapiotest && nft add chain inet tapiotest out '{{ type filter hook output priority 0; policy accept; }}' && nft add rule inet tapiotest out tcp dport {port} counter drop"
    ));
    let pid = timed_out_connect(&ns, "127.0.0.1", port);
    let v = timeout_named_by_its_drops(&agent, port, pid, &ns);
    assert!(v["data"]["drop_reason_code"].as_u64().is_some());
}

/// The timeout occurrence for `port`, checked against the drop rule with a
/// counter in `firewall`: the connector's pid, and every SYN the rule
/// dropped (the first one and its retries) counted and named.
fn timeout_named_by_its_drops(agent: &Agent, port: u16, pid: u32, firewall: &Netns) -> Value {
    let v = timeout_to(agent, port);
    let d = &v["data"];
    assert_eq!(d["pid"], pid);
    let dropped = nft_counter_packets(firewall);
    assert!(dropped >= 2, "the SYN and its retries: {dropped}");
    assert_eq!(d["drops"], dropped, "every SYN the rule dropped: {v}");
    assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{v}");
    v
}

/// Two namespaces joined by a veth pair: `client` 10.77.0.1, `server`
/// 10.77.0.2 (addresses are per namespace, so every test may use them).
fn veth_pair(prefix: &str) -> (Netns, Netns) {
    let client = Netns::new(&format!("{prefix}c"));
    let server = Netns::new(&format!("{prefix}s"));
    let (a, b) = (unique("tva"), unique("tvb"));
    sh(&format!(
        "ip link add {a} netns {} type veth peer name {b} netns {}",
        client.name, server.name
    ));
    client.exec(&format!(
        "ip addr add 10.77.0.1/24 dev {a} && ip link set {a} up"
    ));
    server.exec(&format!(
        "ip addr add 10.77.0.2/24 dev {b} && ip link set {b} up"
    ));
    (client, server)
}

#[test]
fn syns_dropped_in_the_peers_namespace_name_the_drop() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let (client, server) = veth_pair("tpdp");
    let port = closed_port("127.0.0.1");
    client.exec("sysctl -qw net.ipv4.tcp_syn_retries=1");
    server.exec(&format!(
        "{NFT_TABLE} && nft add rule inet tapiotest in tcp dport {port} counter drop"
    ));
    let pid = timed_out_connect(&client, "10.77.0.2", port);
    // Dropped in another namespace: tied to this connect by the 4-tuple.
    let v = timeout_named_by_its_drops(&agent, port, pid, &server);
    assert_eq!(v["data"]["daddr"], "10.77.0.2");
}

#[test]
fn a_timeout_nobody_dropped_has_no_drop_reason() {
    require_ebpf!();
    let agent = Agent::start("", &[]);
    let (ns, port) = ns_and_port("tpaq");
    ns.exec("sysctl -qw net.ipv4.tcp_syn_retries=1");
    // A full accept queue: the listener never accepts and its backlog of 0
    // holds the first connection; the kernel consumes later SYNs (counted
    // in ListenOverflows, not freed as drops).
    let (_, out, err, pid) = python_in(
        Some(&ns),
        &format!(
            "import socket\nl=socket.socket()\nl.bind(('127.0.0.1',{port}))\nl.listen(0)\nfirst=socket.create_connection(('127.0.0.1',{port}))\ns=socket.socket()\ns.settimeout(30)\ntry:\n  s.connect(('127.0.0.1',{port}))\n  print('connected')\nexcept OSError as e:\n  print(e.errno)"
        ),
        Duration::from_secs(40),
    );
    assert_eq!(out.trim(), "110", "python saw ETIMEDOUT ({err})");
    let v = timeout_to(&agent, port);
    let d = &v["data"];
    assert_eq!(d["pid"], pid);
    for k in ["drops", "drop_reason", "drop_reason_code"] {
        assert!(d.get(k).is_none(), "{k} without a drop: {v}");
    }
}

#[test]
fn a_lossy_bulk_transfers_spike_occurrences_sum_to_the_kernels_retransmits() {
    require_ebpf!();
    // min_count 1: every retransmit opens or joins a spike window, so the
    // occurrences must account for every segment the kernel retransmitted.
    let agent = Agent::start(
        "[observers.network]\nretransmit_min_count = 1\nretransmit_window_ms = 2000\n",
        &[],
    );
    let (ns, port) = ns_and_port("tplossy");
    // Drop about 1 in 20 of the client's segments to the server: fast
    // retransmits of multi-segment (GSO) skbs, SACK repairs and RTOs. And
    // exactly the first SYN (the rule's own counter starts at 0): its
    // retransmit is in tcpi_total_retrans too, but it belongs to the
    // connect (a timeout if it never gets through), never to a spike.
    ns.exec(&format!(
        "{NFT_TABLE} && nft add rule inet tapiotest in tcp dport {port} 'tcp flags & syn == syn' numgen inc mod 1000 == 0 drop && nft add rule inet tapiotest in tcp dport {port} 'tcp flags & syn == 0' numgen random mod 20 == 0 drop"
    ));
    let prog = format!(
        r#"import socket,struct,sys,threading
l=socket.socket()
l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
l.bind(('127.0.0.1',{port}))
l.listen(1)
got=[0]
def serve():
    a,_=l.accept()
    while True:
        b=a.recv(1<<20)
        if not b: break
        got[0]+=len(b)
    a.sendall(b'k')
t=threading.Thread(target=serve)
t.start()
c=socket.create_connection(('127.0.0.1',{port}))
c.sendall(b'z'*(8<<20))
c.shutdown(socket.SHUT_WR)
c.recv(1)
t.join()
info=c.getsockopt(socket.IPPROTO_TCP,socket.TCP_INFO,232)
print(c.getsockname()[1],struct.unpack_from('I',info,{TCPI_TOTAL_RETRANS})[0],got[0],flush=True)
sys.stdin.readline()
"#
    );
    let mut child = KillOnDrop(ns.spawn("python3", &["-c", &prog]));
    let lines = line_channel(child.0.stdout.take().unwrap());
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the transfer finishes");
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (sport, kernel_total, got) = (v[0], v[1], v[2]);
    assert_eq!(got, 8 << 20, "everything arrived");
    // The one SYN retransmit is the kernel's, not a spike's.
    let total = kernel_total - 1;
    assert!(total > 0, "the drop rule made retransmits");
    // The socket stays open: the last window closes by time (2 s), then
    // the sum is final.
    let of_conn = |v: &Value| {
        of_type_port("kernel.network.retransmit_spike", port)(v) && v["data"]["sport"] == sport
    };
    let retransmits = || -> u64 {
        agent
            .matching(of_conn)
            .iter()
            .map(|v| v["data"]["retransmits"].as_u64().unwrap())
            .sum()
    };
    let sum = settle(
        Duration::from_secs(15),
        Duration::from_millis(100),
        retransmits,
        |sum| *sum >= total,
    );
    std::thread::sleep(Duration::from_millis(2500));
    let again = retransmits();
    assert_eq!(
        again, sum,
        "no more after the windows closed (the kernel counted {kernel_total}, one a SYN)"
    );
    assert_eq!(
        sum,
        total,
        "spike occurrences {:#?}",
        agent.matching(of_conn)
    );
    write_stdin(&mut child.0, "done\n");
}
