//! Per-occurrence cost of container attribution (`Attributor::enrich`):
//! a cache hit, a miss (discovery + one bounded walk of the whole cgroup
//! tree, then the lookup), and the path parser alone.
//!
//! The tree is a synthetic cgroup2 root in a temp dir shaped like a busy
//! Kubernetes node: 3 QoS slices × 40 pods × 3 containers each (plus
//! system slices), about 530 directories. Run: `cargo bench --bench attribution`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{Map, Value};
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
    let data = || {
        let mut m = Map::new();
        m.insert("pid".into(), 4242.into());
        m.insert("cgroup_id".into(), Value::from(id));
        m
    };

    let mut warm = Attributor::new(t.path().to_path_buf());
    warm.enrich(&mut data());
    c.bench_function("enrich_cache_hit", |b| {
        b.iter_batched(
            data,
            |mut m| {
                warm.enrich(&mut m);
                black_box(m)
            },
            BatchSize::SmallInput,
        )
    });

    c.bench_function("enrich_cache_miss_walk", |b| {
        b.iter_batched(
            || (Attributor::new(t.path().to_path_buf()), data()),
            |(mut a, mut m)| {
                a.enrich(&mut m);
                black_box(m)
            },
            BatchSize::SmallInput,
        )
    });

    let mut absent = Attributor::new(t.path().to_path_buf());
    let mut gone = Map::new();
    gone.insert("cgroup_id".into(), Value::from(u64::MAX));
    absent.enrich(&mut gone);
    c.bench_function("enrich_known_absent", |b| {
        b.iter_batched(
            || {
                let mut m = Map::new();
                m.insert("cgroup_id".into(), Value::from(u64::MAX));
                m
            },
            |mut m| {
                absent.enrich(&mut m);
                black_box(m)
            },
            BatchSize::SmallInput,
        )
    });

    let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8d7f4e3a_1b2c_4d5e_9f01_23456789abcd.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
    c.bench_function("parse_cgroup_path", |b| {
        b.iter(|| black_box(parse_cgroup_path(black_box(path))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
