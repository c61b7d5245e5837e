//! Non-Linux builds: everything but the agent works; `tapio agent` says why
//! it cannot run and exits 2.

pub fn preflight() -> anyhow::Result<()> {
    anyhow::bail!(
        "the agent runs only on Linux (kernel >= 5.8 with BTF); this build is for another OS"
    )
}
