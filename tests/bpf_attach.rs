//! The embedded network, container and storage BPF objects load and every program
//! attaches on this kernel. Needs root/CAP_BPF: skips with one line
//! otherwise, fails instead when `TAPIO_REQUIRE_EBPF=1`.
#![cfg(target_os = "linux")]

mod bpf_objects {
    include!(concat!(env!("OUT_DIR"), "/bpf_objects.rs"));
}

use libbpf_rs::{MapCore, ObjectBuilder};

fn load_and_attach(name: &str) -> Vec<String> {
    let bytes = bpf_objects::OBJECTS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("object {name} is not embedded"))
        .1;
    let obj = ObjectBuilder::default()
        .open_memory(bytes)
        .unwrap_or_else(|e| panic!("open {name}: {e:#}"))
        .load()
        .unwrap_or_else(|e| panic!("load {name}: {e:#}"));
    let mut links = Vec::new();
    let mut names = Vec::new();
    for prog in obj.progs_mut() {
        let pname = prog.name().to_string_lossy().into_owned();
        let link = prog
            .attach()
            .unwrap_or_else(|e| panic!("attach {name}/{pname}: {e:#}"));
        links.push(link);
        names.push(pname);
    }
    for want in ["events", "tapio_config", "tapio_stats"] {
        assert!(
            obj.maps().any(|m| m.name() == want),
            "{name} has no map {want}"
        );
    }
    names.sort();
    names
}

#[test]
fn container_object_loads_and_attaches() {
    require_ebpf!();
    assert_eq!(
        load_and_attach("container"),
        [
            "handle_ctr__mark_victim",
            "handle_ctr__sched_process_exit",
            "handle_ctr__signal_generate"
        ]
    );
}

#[test]
fn network_object_loads_and_attaches() {
    require_ebpf!();
    assert_eq!(
        load_and_attach("network"),
        [
            "handle_net__inet_sk_error_report",
            "handle_net__inet_sock_set_state",
            "handle_net__kfree_skb",
            "handle_net__tcp_receive_reset",
            "handle_net__tcp_retransmit_skb"
        ]
    );
}

#[test]
fn storage_object_loads_and_attaches() {
    require_ebpf!();
    assert_eq!(
        load_and_attach("storage"),
        [
            "handle_sto__block_rq_complete",
            "handle_sto__block_rq_issue",
            "handle_sto__block_rq_merge",
            "handle_sto__block_rq_requeue"
        ]
    );
}
