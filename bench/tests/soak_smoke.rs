//! CI's short soak: `scripts/soak.sh` for 10 s with 300 clients per round against the
//! debug binaries. The script checks every round's ledger, that the registry (uids,
//! connections, groups) drains to empty, and that memory returns near its first-round
//! level; the long run and its figures are in docs/benchmarks.md.

mod common;

use std::process::Command;

#[test]
fn short_soak_keeps_the_ledger_and_drains_the_registry() {
    common::daemon_bin();
    let out = Command::new(common::script("soak.sh"))
        .args(["10", "300"])
        .env("PUSHWIRE_BIN_DIR", common::bin_dir())
        .output()
        .expect("run scripts/soak.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ledger failures 0"), "{stdout}");
    assert!(
        stdout.contains(r#""uids":0,"connections":0,"groups":0"#),
        "{stdout}"
    );
}
