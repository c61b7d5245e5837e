//! Node-local container attribution: cgroup id → cgroup path →
//! `container_id`, `pod_uid`, `container_runtime` (SPEC §2). Never the
//! Kubernetes API.
//!
//! A cgroup's id is the inode number of its directory in the cgroup
//! filesystem (kernfs hands out `kn->id` as the inode, and BPF reads the
//! same `kn->id`). Events carry `cgroup_id` (the cgroup2 id) and, from the
//! container observer, `memcg_id` (the id of the memory cgroup, which on a
//! cgroup v1 node lives in its own hierarchy with its own ids). Each is
//! looked up in its hierarchy:
//!
//! * cgroup2: `<root>` when it is a cgroup2 mount, else `<root>/unified`
//!   (systemd's hybrid layout);
//! * v1 memory: `<root>/memory` when it is a v1 memory mount (else memcg
//!   ids are cgroup2 ids).
//!
//! Resolution is cached per hierarchy (bounded); a miss re-reads that
//! hierarchy with a bounded walk (`readdir` only: the directory entries
//! carry the inode numbers, no `stat` per cgroup) and rebuilds its index,
//! so removed cgroups leave it. Ids still unknown after a walk are
//! remembered (bounded) and never trigger another walk: kernfs ids are not
//! reused.
//!
//! Paths are parsed by [`parse_cgroup_path`]; it accepts only 64-hex
//! container ids in the layouts below, so a path that merely looks similar
//! attributes nothing:
//!
//! | runtime | layout (any prefix) |
//! |---|---|
//! | containerd (CRI) | `cri-containerd-<id>.scope` |
//! | CRI-O | `crio-<id>.scope`, `crio-<id>` |
//! | Docker | `docker-<id>.scope`, `/docker/<id>` |
//! | Podman | `libpod-<id>.scope`, `libpod-<id>` |
//! | Kubernetes, cgroupfs driver (runtime not named) | `kubepods…/pod<uid>/<id>` |
//!
//! `pod_uid` comes from a `pod<uid>` segment (cgroupfs driver) or a
//! `kubepods[-<qos>]-pod<uid_with_underscores>.slice` segment (systemd
//! driver) above the container, only under a `kubepods` ancestor.
//!
//! `pod_name` and `namespace` come from the kubelet's pod log directories,
//! `/var/log/pods/<namespace>_<pod>_<uid>/` (the root is configurable for
//! tests): the kubelet creates one per pod before any of its containers
//! starts. Namespace and pod names are DNS-1123 names, which never contain
//! `_`, so a directory name splits into exactly three parts; anything else
//! (or a uid that is not a pod UID) is ignored. The uid → names index is
//! bounded and rebuilt by one bounded `readdir` on a miss; a uid still
//! unknown after it is remembered (bounded) and never re-read. No
//! directory for the uid: no `pod_name`/`namespace` (never a guess).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::wire::evidence::{Container, Evidence};

/// Longest cgroup path considered (the kernel's own PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Most directories one walk reads.
pub const MAX_WALK_DIRS: usize = 65_536;
/// Deepest directory one walk descends to.
pub const MAX_WALK_DEPTH: usize = 32;
/// Most cgroups indexed per hierarchy.
pub const MAX_INDEX: usize = 16_384;
/// Most ids remembered as absent per hierarchy.
pub const MAX_ABSENT: usize = 4_096;
/// Where the kubelet keeps one directory per pod.
pub const POD_LOG_ROOT: &str = "/var/log/pods";
/// Most pod directories one listing reads.
pub const MAX_POD_DIRS: usize = 16_384;
/// Most pods indexed (a node runs at most a few hundred).
pub const MAX_PODS: usize = 4_096;

/// What a cgroup path says about its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub container_id: String,
    pub pod_uid: Option<String>,
    /// `containerd`, `cri-o`, `docker` or `podman`; `None` when the layout
    /// does not name the runtime.
    pub runtime: Option<&'static str>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A Kubernetes pod UID: 8-4-4-4-12 lowercase hex.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// A container id and runtime from one path segment (given the segment
/// before it), if the segment is a container's cgroup.
fn container_segment(seg: &str, parent: Option<&str>) -> Option<(String, Option<&'static str>)> {
    let base = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in [
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = base.strip_prefix(prefix) {
            // `crio-conmon-<id>` / `libpod-conmon-<id>` are the monitors,
            // not the container: their rest is not a bare id, so they fail here.
            return is_container_id(id).then(|| (id.to_string(), Some(runtime)));
        }
    }
    if seg.len() == 64 && is_container_id(seg) {
        return match parent {
            Some("docker") => Some((seg.to_string(), Some("docker"))),
            Some(p) if pod_segment(p).is_some() => Some((seg.to_string(), None)),
            _ => None,
        };
    }
    None
}

/// The pod UID named by one segment: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid_underscored>.slice` (systemd driver).
fn pod_segment(seg: &str) -> Option<String> {
    if let Some(uid) = seg.strip_prefix("pod") {
        return is_uuid(uid).then(|| uid.to_string());
    }
    let base = seg.strip_suffix(".slice")?;
    if !base.starts_with("kubepods") {
        return None;
    }
    let (_, uid) = base.rsplit_once("-pod")?;
    let uid = uid.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// A DNS-1123 label (a Kubernetes namespace name).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain (a pod name): labels joined by dots, ≤ 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The pod a kubelet log directory name `<namespace>_<pod>_<uid>` names:
/// `(uid, namespace, pod_name)`.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_dns_label(ns) || !is_dns_subdomain(pod) || !is_uuid(uid) {
        return None;
    }
    Some((uid.to_string(), ns.to_string(), pod.to_string()))
}

/// Parses a cgroup path (as in `/proc/<pid>/cgroup`, v1 or v2). `None`
/// when it names no container, or is not a plausible path at all (longer
/// than [`MAX_PATH_LEN`], a NUL, a `.` or `..` segment).
pub fn parse_cgroup_path(path: &str) -> Option<Attribution> {
    if path.len() > MAX_PATH_LEN || path.contains('\0') {
        return None;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    // The deepest container segment wins: a container may create cgroups
    // of its own below it.
    let (idx, (container_id, runtime)) = segs.iter().enumerate().rev().find_map(|(i, s)| {
        let parent = i.checked_sub(1).map(|p| segs[p]);
        container_segment(s, parent).map(|c| (i, c))
    })?;
    let above = &segs[..idx];
    let under_kubepods = above.iter().any(|s| s.starts_with("kubepods"));
    let pod_uid = if under_kubepods {
        above.iter().rev().find_map(|s| pod_segment(s))
    } else {
        None
    };
    Some(Attribution {
        container_id,
        pod_uid,
        runtime,
    })
}

/// Which hierarchy an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hier {
    V2,
    V1Memory,
}

#[derive(Clone)]
struct Resolved {
    path: Arc<str>,
    attribution: Option<Attribution>,
}

#[derive(Default)]
struct Index {
    dir: Option<PathBuf>,
    by_id: HashMap<u64, Resolved>,
    absent: HashSet<u64>,
}

/// Counters of the attributor's work, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttributorStats {
    pub hits: u64,
    pub walks: u64,
    pub absent_hits: u64,
    pub truncated_walks: u64,
    /// Listings of the pod log root.
    pub pod_walks: u64,
    pub pod_hits: u64,
}

/// uid → (namespace, pod name) from the kubelet's pod log directories.
struct PodIndex {
    root: PathBuf,
    by_uid: HashMap<String, (Arc<str>, Arc<str>)>,
    absent: HashSet<String>,
}

impl PodIndex {
    fn lookup(&mut self, uid: &str, stats: &mut AttributorStats) -> Option<(Arc<str>, Arc<str>)> {
        if let Some(names) = self.by_uid.get(uid) {
            stats.pod_hits += 1;
            return Some(names.clone());
        }
        if self.absent.contains(uid) {
            return None;
        }
        stats.pod_walks += 1;
        self.rebuild();
        let found = self.by_uid.get(uid).cloned();
        if found.is_none() {
            if self.absent.len() >= MAX_ABSENT {
                self.absent.clear();
            }
            self.absent.insert(uid.to_string());
        }
        found
    }

    /// Re-reads the root: one bounded `readdir`, names only (a removed
    /// pod leaves the index, a new one enters).
    fn rebuild(&mut self) {
        self.by_uid.clear();
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return; // no kubelet here
        };
        for entry in rd.flatten().take(MAX_POD_DIRS) {
            if self.by_uid.len() >= MAX_PODS {
                break;
            }
            // d_type from readdir: no stat per entry.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some((uid, ns, pod)) = parse_pod_log_dir(&name) {
                self.by_uid.insert(uid, (Arc::from(ns), Arc::from(pod)));
            }
        }
    }
}

/// Resolves the cgroup ids of typed evidence to containers. Owns bounded
/// caches; does filesystem reads only on a cache miss.
pub struct Attributor {
    root: PathBuf,
    discovered: bool,
    v2: Index,
    v1_memory: Index,
    pods: PodIndex,
    stats: AttributorStats,
}

impl Attributor {
    /// `cgroup_root` is where cgroup filesystems are mounted, normally
    /// `/sys/fs/cgroup`; pod names come from [`POD_LOG_ROOT`]. Nothing is
    /// read until the first lookup.
    pub fn new(cgroup_root: PathBuf) -> Self {
        Attributor {
            root: cgroup_root,
            discovered: false,
            v2: Index::default(),
            v1_memory: Index::default(),
            pods: PodIndex {
                root: PathBuf::from(POD_LOG_ROOT),
                by_uid: HashMap::new(),
                absent: HashSet::new(),
            },
            stats: AttributorStats::default(),
        }
    }

    /// Reads pod directories under `root` instead of [`POD_LOG_ROOT`].
    pub fn with_pod_log_root(mut self, root: PathBuf) -> Self {
        self.pods.root = root;
        self
    }

    pub fn stats(&self) -> AttributorStats {
        self.stats
    }

    fn discover(&mut self) {
        if self.discovered {
            return;
        }
        self.discovered = true;
        let unified = self.root.join("unified");
        self.v2.dir = if self.root.join("cgroup.controllers").is_file() {
            Some(self.root.clone())
        } else if unified.join("cgroup.controllers").is_file() {
            Some(unified)
        } else {
            None
        };
        let memory = self.root.join("memory");
        self.v1_memory.dir = memory
            .join("memory.limit_in_bytes")
            .is_file()
            .then_some(memory);
    }

    /// The container of the process `evidence` is about, when its
    /// `cgroup_id` or `memcg_id` resolves to a container's cgroup (with
    /// `pod_uid` when the path names one, the pod's name and namespace
    /// when its log directory does, the runtime when the layout names
    /// it). Also names the container of a fatal signal's sender
    /// (`sender_container_id`) when its cgroup resolves to one.
    pub fn enrich(&mut self, evidence: &mut Evidence) -> Option<Container> {
        // The process that sent a fatal signal, when it runs in a container.
        if let Some(sender) = evidence.sender_mut().filter(|s| s.cgroup_id != 0) {
            self.discover();
            if let Some((_, a)) = self.resolve(Hier::V2, sender.cgroup_id) {
                sender.container_id = Some(a.container_id);
            }
        }
        let (cgroup_id, memcg_id) = evidence.cgroup_ids();
        self.container(cgroup_id, memcg_id)
    }

    /// The container of a process with these ids (cgroup2 first, then the
    /// memory cgroup in its own hierarchy).
    pub fn container(
        &mut self,
        cgroup_id: Option<u64>,
        memcg_id: Option<u64>,
    ) -> Option<Container> {
        if cgroup_id.is_none() && memcg_id.is_none() {
            return None;
        }
        self.discover();
        let mut found = cgroup_id.and_then(|id| self.resolve(Hier::V2, id));
        if found.is_none() {
            let hier = if self.v1_memory.dir.is_some() {
                Hier::V1Memory
            } else {
                Hier::V2
            };
            found = memcg_id.and_then(|id| self.resolve(hier, id));
        }
        let (path, a) = found?;
        let pod = match &a.pod_uid {
            Some(uid) => self.pods.lookup(uid, &mut self.stats),
            None => None,
        };
        Some(Container {
            container_id: a.container_id,
            runtime: a.runtime,
            cgroup_path: path,
            pod_uid: a.pod_uid,
            pod,
        })
    }

    /// The container of cgroup `id` in `hier`, with its path.
    fn resolve(&mut self, hier: Hier, id: u64) -> Option<(Arc<str>, Attribution)> {
        if id == 0 {
            return None;
        }
        let stats = &mut self.stats;
        let index = match hier {
            Hier::V2 => &mut self.v2,
            Hier::V1Memory => &mut self.v1_memory,
        };
        let hit = |r: &Resolved| r.attribution.clone().map(|a| (r.path.clone(), a));
        if let Some(r) = index.by_id.get(&id) {
            stats.hits += 1;
            return hit(r);
        }
        if index.absent.contains(&id) {
            stats.absent_hits += 1;
            return None;
        }
        let dir = index.dir.clone()?;
        stats.walks += 1;
        if !walk(&dir, &mut index.by_id) {
            stats.truncated_walks += 1;
        }
        match index.by_id.get(&id) {
            Some(r) => hit(r),
            None => {
                if index.absent.len() >= MAX_ABSENT {
                    index.absent.clear();
                }
                index.absent.insert(id);
                None
            }
        }
    }
}

/// Rebuilds `out` from the tree under `root`: inode → path relative to
/// `root` ("/" for the root itself). Returns false when a bound cut the
/// walk short.
fn walk(root: &Path, out: &mut HashMap<u64, Resolved>) -> bool {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};

    out.clear();
    let Ok(meta) = std::fs::metadata(root) else {
        return true;
    };
    out.insert(
        meta.ino(),
        Resolved {
            path: Arc::from("/"),
            attribution: None,
        },
    );
    let mut complete = true;
    let mut dirs_read = 0usize;
    // (directory, its path relative to root, depth)
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if dirs_read >= MAX_WALK_DIRS {
            complete = false;
            break;
        }
        dirs_read += 1;
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue; // removed while walking, or unreadable
        };
        for entry in rd.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no runtime names cgroups so
            };
            let child = format!("{rel}/{name}");
            if out.len() < MAX_INDEX {
                let attribution = parse_cgroup_path(&child);
                out.insert(
                    entry.ino(),
                    Resolved {
                        path: Arc::from(child.as_str()),
                        attribution,
                    },
                );
            } else {
                complete = false;
            }
            if depth + 1 < MAX_WALK_DEPTH {
                stack.push((entry.path(), child, depth + 1));
            } else {
                complete = false;
            }
        }
    }
    complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::evidence::{AbnormalExit, Sender, Task};
    use serde_json::{Map, Value};

    /// An exit of a process with these ids (0: unknown), sent by a
    /// process in `sender_cgroup` when given.
    fn exit(cgroup_id: u64, memcg_id: u64, sender_cgroup: Option<u64>) -> Evidence {
        Evidence::AbnormalExit(AbnormalExit {
            task: Task {
                pid: 1,
                cgroup_id,
                memcg_id,
                ..Task::default()
            },
            pidns_init: false,
            core_dumped: false,
            signal: 9,
            signal_name: "SIGKILL",
            exit_code: 137,
            sender: sender_cgroup.map(|cgroup_id| Sender {
                pid: 2,
                comm: Default::default(),
                cgroup_id,
                container_id: None,
            }),
        })
    }

    /// What attribution adds: the container's fields and the sender's
    /// container, as `data` will show them.
    fn added(at: &mut Attributor, mut ev: Evidence) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(c) = at.enrich(&mut ev) {
            c.visit(&mut |k, v| {
                m.insert(k.to_string(), serde_json::to_value(v).unwrap());
            });
        }
        if let Some(id) = ev.sender_mut().and_then(|s| s.container_id.take()) {
            m.insert("sender_container_id".into(), id.into());
        }
        m
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "8d7f4e3a-1b2c-4d5e-9f01-23456789abcd";

    fn a(id: &str, pod: Option<&str>, rt: Option<&'static str>) -> Option<Attribution> {
        Some(Attribution {
            container_id: id.into(),
            pod_uid: pod.map(Into::into),
            runtime: rt,
        })
    }

    #[test]
    fn runtime_layouts_table() {
        let uid_us = UID.replace('-', "_");
        let cases: Vec<(String, Option<Attribution>)> = vec![
            // containerd / CRI, systemd driver (v2 and v1 alike)
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_us}.slice/cri-containerd-{ID}.scope"),
                a(ID, Some(UID), Some("containerd")),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_us}.slice/cri-containerd-{ID}.scope"),
                a(ID, Some(UID), Some("containerd")),
            ),
            // cgroupfs driver: runtime not named
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                a(ID, Some(UID), None),
            ),
            (format!("/kubepods/pod{UID}/{ID}"), a(ID, Some(UID), None)),
            // CRI-O
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_us}.slice/crio-{ID}.scope"),
                a(ID, Some(UID), Some("cri-o")),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
                a(ID, Some(UID), Some("cri-o")),
            ),
            // Docker
            (
                format!("/system.slice/docker-{ID}.scope"),
                a(ID, None, Some("docker")),
            ),
            (format!("/docker/{ID}"), a(ID, None, Some("docker"))),
            // Podman
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                a(ID, None, Some("podman")),
            ),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
                a(ID, None, Some("podman")),
            ),
            (
                format!("/libpod_parent/libpod-{ID}"),
                a(ID, None, Some("podman")),
            ),
            // Nested cgroups inside a container keep the container's id.
            (
                format!("/system.slice/docker-{ID}.scope/init.scope"),
                a(ID, None, Some("docker")),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    #[test]
    fn not_containers() {
        let cases = [
            "/".to_string(),
            String::new(),
            "/system.slice/sshd.service".into(),
            "/user.slice/user-0.slice/session-1.scope".into(),
            "/init.scope".into(),
            "/kubepods.slice/kubepods-burstable.slice".into(),
            // conmon monitors are not the container
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            // a bare id needs a docker or pod parent
            format!("/system.slice/{ID}"),
            format!("/{ID}"),
            // ids of the wrong length or alphabet
            format!("/system.slice/docker-{}.scope", &ID[..63]),
            format!("/system.slice/docker-{ID}0.scope"),
            format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            "/docker/not-an-id".into(),
        ];
        for path in cases {
            assert_eq!(parse_cgroup_path(&path), None, "{path}");
        }
    }

    #[test]
    fn pod_uid_only_under_kubepods_and_well_formed() {
        // A pod-looking segment outside kubepods is not a pod.
        assert_eq!(
            parse_cgroup_path(&format!("/pod{UID}/docker-{ID}.scope")),
            a(ID, None, Some("docker"))
        );
        // A malformed uid is left out, the container still attributed.
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/burstable/podnot-a-uid/crio-{ID}")),
            a(ID, None, Some("cri-o"))
        );
        // The bare-id layout needs a well-formed pod parent.
        assert_eq!(
            parse_cgroup_path(&format!("/kubepods/burstable/podnot-a-uid/{ID}")),
            None
        );
    }

    #[test]
    fn hostile_paths() {
        let long = format!("/{}/docker-{ID}.scope", "a".repeat(MAX_PATH_LEN));
        let deep = format!("{}/docker-{ID}.scope", "/x".repeat(2000));
        let cases = [
            (long, None),
            // Deep but within the length bound is fine.
            (
                deep.clone(),
                if deep.len() <= MAX_PATH_LEN {
                    a(ID, None, Some("docker"))
                } else {
                    None
                },
            ),
            (format!("/kubepods/pod{UID}/../docker-{ID}.scope"), None),
            (format!("/system.slice/./docker-{ID}.scope"), None),
            (format!("/system.slice/docker-{ID}.scope\0"), None),
            // Unicode around the id is fine; in the id it is not.
            (
                format!("/système.slice/ünïcödé/docker-{ID}.scope"),
                a(ID, None, Some("docker")),
            ),
            (format!("/system.slice/docker-{}é.scope", &ID[..62]), None),
            (format!("/system.slice/docker-{}é.scope", &ID[..63]), None),
            ("/kubepods/pod😀/😀".to_string(), None),
            ("docker-".to_string(), None),
            ("///".to_string(), None),
            (".scope".to_string(), None),
            ("-pod.slice".to_string(), None),
            ("kubepods-pod.slice/x".to_string(), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{}", path.escape_debug());
        }
    }

    fn ino(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().ino()
    }

    /// A fake cgroup root (any directory tree has inode numbers).
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("unified");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "").unwrap();
        let c = v2.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(v2.join("system.slice/cron.service")).unwrap();
        let mem = t.path().join("memory");
        std::fs::create_dir_all(mem.join(format!("kubepods/burstable/pod{UID}/{ID}"))).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "").unwrap();
        (t, c)
    }

    #[test]
    fn enrich_resolves_v2_ids_and_caches() {
        let (t, c) = tree();
        let mut at = Attributor::new(t.path().to_path_buf());
        let data = added(&mut at, exit(ino(&c), 0, None));
        assert_eq!(data["container_id"], ID);
        assert_eq!(data["container_runtime"], "docker");
        assert_eq!(
            data["cgroup_path"],
            format!("/system.slice/docker-{ID}.scope")
        );
        assert!(!data.contains_key("pod_uid"));
        assert_eq!(at.stats().walks, 1);
        // Second lookup: from the cache, no walk.
        let again = added(&mut at, exit(ino(&c), 0, None));
        assert_eq!(again["container_id"], ID);
        assert_eq!(at.stats().walks, 1);
        assert_eq!(at.stats().hits, 1);
    }

    #[test]
    fn enrich_uses_memcg_id_in_the_v1_memory_hierarchy() {
        let (t, _) = tree();
        let leaf = t
            .path()
            .join(format!("memory/kubepods/burstable/pod{UID}/{ID}"));
        let mut at = Attributor::new(t.path().to_path_buf());
        // The cgroup2 id is the root (a host-looking process), but its
        // memory cgroup is a pod's container.
        let data = added(
            &mut at,
            exit(ino(&t.path().join("unified")), ino(&leaf), None),
        );
        assert_eq!(data["container_id"], ID);
        assert_eq!(data["pod_uid"], UID);
        assert!(!data.contains_key("container_runtime"));
    }

    #[test]
    fn unknown_and_host_ids_leave_data_alone_and_do_not_rewalk() {
        let (t, _) = tree();
        let mut at = Attributor::new(t.path().to_path_buf());
        let host = ino(&t.path().join("unified/system.slice/cron.service"));
        for _ in 0..3 {
            let data = added(&mut at, exit(host, 0, None));
            assert!(data.is_empty(), "{data:?}");
        }
        assert_eq!(at.stats().walks, 1, "the host cgroup is cached too");
        for _ in 0..3 {
            let data = added(&mut at, exit(u64::MAX, 0, None));
            assert!(data.is_empty(), "{data:?}");
        }
        assert_eq!(at.stats().walks, 2, "an absent id walks once");
        assert_eq!(at.stats().absent_hits, 2);
        // No ids at all: nothing read.
        let walks = at.stats().walks;
        assert!(added(&mut at, exit(0, 0, None)).is_empty());
        assert_eq!(at.stats().walks, walks);
    }

    #[test]
    fn a_new_cgroup_is_found_by_the_next_walk() {
        let (t, _) = tree();
        let mut at = Attributor::new(t.path().to_path_buf());
        added(&mut at, exit(1, 0, None));
        let other = "f".repeat(64);
        let newc = t
            .path()
            .join(format!("unified/machine.slice/libpod-{other}.scope"));
        std::fs::create_dir_all(&newc).unwrap();
        let data = added(&mut at, exit(ino(&newc), 0, None));
        assert_eq!(data["container_id"], other);
        assert_eq!(data["container_runtime"], "podman");
    }

    #[test]
    fn pod_log_dir_names() {
        let ok = [
            (
                format!("default_web-7d4b9c8f6-x2k4p_{UID}"),
                ("default", "web-7d4b9c8f6-x2k4p"),
            ),
            (
                format!("kube-system_coredns.v1-0_{UID}"),
                ("kube-system", "coredns.v1-0"),
            ),
            (format!("a_b_{UID}"), ("a", "b")),
        ];
        for (name, (ns, pod)) in ok {
            assert_eq!(
                parse_pod_log_dir(&name),
                Some((UID.into(), ns.into(), pod.into())),
                "{name}"
            );
        }
        let long_label = "a".repeat(64);
        let bad = [
            String::new(),
            UID.to_string(),
            format!("default_{UID}"),
            format!("default_web_extra_{UID}"),
            format!("Default_web_{UID}"),
            format!("default_Web_{UID}"),
            format!("-ns_web_{UID}"),
            format!("ns_web-_{UID}"),
            format!("ns_web..x_{UID}"),
            format!("{long_label}_web_{UID}"),
            format!("ns_{}_{UID}", "a.".repeat(127) + "a"),
            "default_web_not-a-uid".into(),
            // A static pod's uid is a config hash, not a pod UID.
            "kube-system_etcd-n1_0123456789abcdef0123456789abcdef".into(),
            format!("default_wéb_{UID}"),
        ];
        for name in bad {
            assert_eq!(parse_pod_log_dir(&name), None, "{name}");
        }
    }

    /// A fake cgroup tree with one pod container (systemd driver) and a
    /// fake kubelet pod log root.
    fn pod_tree() -> (tempfile::TempDir, u64, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("cg");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "").unwrap();
        let uid_us = UID.replace('-', "_");
        let c = v2.join(format!(
            "kubepods.slice/kubepods-pod{uid_us}.slice/cri-containerd-{ID}.scope"
        ));
        std::fs::create_dir_all(&c).unwrap();
        let logs = t.path().join("pods");
        std::fs::create_dir_all(logs.join(format!("shop_cart-5f9c_{UID}/cart"))).unwrap();
        // Neighbours that must not be mistaken for it.
        std::fs::create_dir_all(logs.join("shop_other_8d7f4e3a-1b2c-4d5e-9f01-000000000000"))
            .unwrap();
        std::fs::write(logs.join(format!("x_y_{UID}.log")), "").unwrap();
        std::fs::write(logs.join(format!("not_adir_{UID}")), "").unwrap();
        let id = ino(&c);
        (t, id, logs)
    }

    #[test]
    fn pod_name_and_namespace_come_from_the_pod_log_directory() {
        let (t, id, logs) = pod_tree();
        let mut at = Attributor::new(t.path().join("cg")).with_pod_log_root(logs);
        let data = added(&mut at, exit(id, 0, None));
        assert_eq!(data["pod_uid"], UID);
        assert_eq!(data["pod_name"], "cart-5f9c");
        assert_eq!(data["namespace"], "shop");
        assert_eq!(data["container_id"], ID);
        assert_eq!(at.stats().pod_walks, 1);
        // Cached: no second listing.
        for _ in 0..3 {
            let data = added(&mut at, exit(id, 0, None));
            assert_eq!(data["pod_name"], "cart-5f9c");
        }
        assert_eq!(at.stats().pod_walks, 1);
        assert_eq!(at.stats().pod_hits, 3);
    }

    #[test]
    fn no_pod_directory_means_no_names_and_one_listing() {
        let (t, id, logs) = pod_tree();
        std::fs::remove_dir_all(logs.join(format!("shop_cart-5f9c_{UID}"))).unwrap();
        let mut at = Attributor::new(t.path().join("cg")).with_pod_log_root(logs);
        for _ in 0..3 {
            let data = added(&mut at, exit(id, 0, None));
            assert_eq!(data["pod_uid"], UID, "the cgroup still names the pod");
            assert!(!data.contains_key("pod_name"), "{data:?}");
            assert!(!data.contains_key("namespace"));
        }
        assert_eq!(at.stats().pod_walks, 1, "an absent uid is listed once");
        // No kubelet at all: harmless.
        let mut at = Attributor::new(t.path().join("cg"))
            .with_pod_log_root(PathBuf::from("/nonexistent/tapio-pods"));
        let data = added(&mut at, exit(id, 0, None));
        assert_eq!(data["pod_uid"], UID);
        assert!(!data.contains_key("pod_name"));
        // A container outside Kubernetes never lists the pod root.
        let (t2, _) = tree();
        let c = t2
            .path()
            .join(format!("unified/system.slice/docker-{ID}.scope"));
        let mut at =
            Attributor::new(t2.path().to_path_buf()).with_pod_log_root(t.path().join("pods"));
        let data = added(&mut at, exit(ino(&c), 0, None));
        assert!(!data.contains_key("pod_name"));
        assert_eq!(at.stats().pod_walks, 0);
    }

    #[test]
    fn the_pod_index_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..MAX_PODS + 50 {
            let uid = format!("8d7f4e3a-1b2c-4d5e-9f01-{i:012x}");
            std::fs::create_dir(t.path().join(format!("ns_p{i}_{uid}"))).unwrap();
        }
        let mut idx = PodIndex {
            root: t.path().to_path_buf(),
            by_uid: HashMap::new(),
            absent: HashSet::new(),
        };
        idx.rebuild();
        assert_eq!(idx.by_uid.len(), MAX_PODS);
    }

    #[test]
    fn a_signal_sender_in_a_container_is_named() {
        let (t, c) = tree();
        let mut at = Attributor::new(t.path().to_path_buf());
        let host = ino(&t.path().join("unified/system.slice/cron.service"));
        let data = added(&mut at, exit(host, 0, Some(ino(&c))));
        assert_eq!(data["sender_container_id"], ID);
        assert!(
            !data.contains_key("container_id"),
            "the victim is a host process"
        );
        // A host sender: nothing added.
        let data = added(&mut at, exit(0, 0, Some(host)));
        assert!(data.is_empty(), "{data:?}");
    }

    #[test]
    fn missing_root_is_harmless() {
        let mut at = Attributor::new(PathBuf::from("/nonexistent/tapio-cgroup-root"));
        assert!(added(&mut at, exit(5, 0, None)).is_empty());
        assert_eq!(at.stats().walks, 0);
    }
}
