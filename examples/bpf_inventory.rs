//! Prints what the BPF objects embedded in `tapio` ask of the kernel, for
//! `scripts/verify-lean.sh` to check against its budgets. The objects are
//! only opened (parsed, BTF map definitions resolved), never loaded, so this
//! needs no privilege. Output, one fact per line:
//!   object <observer> <bytes>
//!   map <observer> <map name> <map type> <max_entries>
//! (`max_entries` is in bytes for a ring buffer, entries otherwise.)

#[cfg(target_os = "linux")]
fn main() {
    let objects = tapio::agent::linux::loader::embedded_objects();
    if objects.is_empty() {
        eprintln!("bpf_inventory: no BPF objects are embedded in this build");
        std::process::exit(1);
    }
    for (observer, bytes) in objects {
        println!("object {observer} {}", bytes.len());
        let open = libbpf_rs::ObjectBuilder::default()
            .open_memory(bytes)
            .unwrap_or_else(|e| panic!("cannot open the {observer} object: {e}"));
        for map in open.maps() {
            println!(
                "map {observer} {} {:?} {}",
                map.name().to_string_lossy(),
                map.map_type(),
                map.max_entries()
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("bpf_inventory: BPF objects are only built for Linux targets");
    std::process::exit(1);
}
