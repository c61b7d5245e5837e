//! Compiles every `bpf/<name>.bpf.c` into `OUT_DIR/<name>.bpf.o` with
//! libbpf-cargo (Linux targets only) and writes `bpf_objects.rs`, which
//! embeds the objects in the binary. `--ebpf-dir` can replace them at run
//! time with `.o` files of the same names.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let mut table = String::from("/// (observer name, compiled BPF object) pairs.\n");
    table.push_str("pub const OBJECTS: &[(&str, &[u8])] = &[\n");
    if target_os == "linux" {
        let arch = match env::var("CARGO_CFG_TARGET_ARCH")
            .unwrap_or_default()
            .as_str()
        {
            "x86_64" => "x86",
            "aarch64" => "arm64",
            "riscv64" => "riscv",
            other => panic!("no BPF target arch mapping for {other}"),
        };
        let include = Path::new("bpf/include");
        let vmlinux_dir = include.join(arch);
        assert!(
            vmlinux_dir.join("vmlinux.h").exists(),
            "missing {}/vmlinux.h: generate it on a {arch} machine (see bpf/include/x86/README.md)",
            vmlinux_dir.display()
        );
        let mut sources: Vec<PathBuf> = fs::read_dir("bpf")
            .expect("read bpf/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
            .collect();
        sources.sort();
        for src in sources {
            let file = src.file_name().unwrap().to_string_lossy().to_string();
            let name = file.trim_end_matches(".bpf.c").to_string();
            let obj = out.join(format!("{name}.bpf.o"));
            libbpf_cargo::SkeletonBuilder::new()
                .source(&src)
                .obj(&obj)
                .clang_args([
                    format!("-I{}", include.display()),
                    format!("-I{}", vmlinux_dir.display()),
                    "-mcpu=v3".to_string(),
                    "-Wall".to_string(),
                    "-Werror".to_string(),
                ])
                .build()
                .unwrap_or_else(|e| panic!("failed to compile {}: {e:#}", src.display()));
            writeln!(
                table,
                "    ({name:?}, include_bytes!({:?})),",
                obj.display().to_string()
            )
            .unwrap();
        }
    }
    table.push_str("];\n");
    if target_os == "linux" && env::var("PROFILE").as_deref() == Ok("release") {
        // The release profile aborts on panic, so nothing ever unwinds and
        // the unwind tables (.eh_frame, .eh_frame_hdr: 0.44 MB, a sixth of
        // the binary) would serve only backtraces. A panic still prints its
        // message and location, then aborts. rustc cannot drop them itself
        // for release alone (-C force-unwind-tables=no is a rustflag for
        // every profile, and tests unwind), so the linker discards them.
        let script = out.join("no-unwind-tables.ld");
        fs::write(
            &script,
            "SECTIONS\n{\n  /DISCARD/ : { *(.eh_frame) *(.eh_frame_hdr) }\n}\nINSERT AFTER .text;\n",
        )
        .expect("write the linker script");
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
    fs::write(out.join("bpf_objects.rs"), table).expect("write bpf_objects.rs");
}
