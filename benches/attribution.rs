//! Per-occurrence cost of container attribution (`Attributor::container`,
//! what `Attributor::enrich` does with an occurrence's cgroup ids):
//! a cache hit, a miss (discovery + one bounded walk of the whole cgroup
//! tree, then the lookup), and the path parser alone.
//!
//! The tree is a synthetic cgroup2 root in a temp dir shaped like a busy
//! Kubernetes node: 3 QoS slices × 40 pods × 3 containers each (plus
//! system slices), about 530 directories. Run: `cargo bench --bench attribution`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use tapio::agent::attribution::{parse_cgroup_path, Attributor};

fn build_tree(root: &Path) -> (PathBuf, usize) {
    let v2 = root.join("unified");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("cgroup.controllers"), "").unwrap();
    let mut dirs = 0;
    let mut target = PathBuf::new();
    for svc in ["sshd", "containerd", "kubelet", "systemd-journald", "cron"] {
        std::fs::create_dir_all(v2.join(format!("system.slice/{svc}.service"))).unwrap();
        dirs += 1;
    }
    for qos in ["burstable", "besteffort", "guaranteed"] {
        for pod in 0..40u32 {
            let uid = format!("{pod:08x}-1b2c-4d5e-9f01-{:012x}", pod * 7);
            let pod_dir = v2.join(format!(
                "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice",
                uid.replace('-', "_")
            ));
            for c in 0..3u32 {
                let id = format!("{pod:032x}{c:032x}");
                let d = pod_dir.join(format!("cri-containerd-{id}.scope"));
                std::fs::create_dir_all(&d).unwrap();
                dirs += 1;
                target = d;
            }
            dirs += 1;
        }
    }
    (target, dirs)
}

fn bench(c: &mut Criterion) {
    let t = tempfile::tempdir().unwrap();
    let (target, dirs) = build_tree(t.path());
    let id = std::fs::metadata(&target).unwrap().ino();
    eprintln!("synthetic cgroup tree: ~{dirs} directories");
    let mut warm = Attributor::new(t.path().to_path_buf());
    assert!(warm.container(Some(id), None).is_some());
    c.bench_function("enrich_cache_hit", |b| {
        b.iter(|| black_box(warm.container(black_box(Some(id)), None)))
    });

    c.bench_function("enrich_cache_miss_walk", |b| {
        b.iter_batched(
            || Attributor::new(t.path().to_path_buf()),
            |mut a| black_box(a.container(Some(id), None)),
            BatchSize::SmallInput,
        )
    });

    let mut absent = Attributor::new(t.path().to_path_buf());
    assert!(absent.container(Some(u64::MAX), None).is_none());
    c.bench_function("enrich_known_absent", |b| {
        b.iter(|| black_box(absent.container(black_box(Some(u64::MAX)), None)))
    });

    let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8d7f4e3a_1b2c_4d5e_9f01_23456789abcd.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    c.bench_function("parse_cgroup_path", |b| {
        b.iter(|| black_box(parse_cgroup_path(black_box(path))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
