//! Stamps the binary with the git revision it was built from, for `pushwire --version`:
//! `PUSHWIRE_GIT` is `a1b2c3d`, `a1b2c3d, dirty` (tracked or untracked changes in the work
//! tree, as `git status --porcelain` lists them) or `unknown` (no git, or not built from
//! this crate's own checkout: a tarball, a `.deb` source build, a vendored copy inside
//! another repository).
//!
//! Reruns when HEAD, the branch it points to or the index move, and when the sources
//! change (which rebuild the crate anyway); an edit elsewhere in the tree (README, tests)
//! shows as `dirty` from the next commit, checkout or source edit on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    for path in ["build.rs", "Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let rev = match revision(&manifest) {
        Some(hash) => {
            let mut watch = vec![
                "HEAD".to_owned(),
                "index".to_owned(),
                "packed-refs".to_owned(),
            ];
            watch.extend(git(&manifest, &["symbolic-ref", "-q", "HEAD"]));
            for name in watch {
                // A path that does not exist would rerun this script on every build.
                if let Some(path) = git(&manifest, &["rev-parse", "--git-path", &name])
                    .map(|p| manifest.join(p))
                    .filter(|p| p.exists())
                {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            // --no-optional-locks: a status that refreshes the index must not rewrite it,
            // or the index would look changed and rerun this script on every build.
            match git(&manifest, &["--no-optional-locks", "status", "--porcelain"]) {
                Some(s) if s.is_empty() => hash,
                Some(_) => format!("{hash}, dirty"),
                None => hash,
            }
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=PUSHWIRE_GIT={rev}");
}

/// The short HEAD hash, if `manifest` is the top of a git work tree.
fn revision(manifest: &Path) -> Option<String> {
    let top = git(manifest, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), manifest) {
        return None;
    }
    git(manifest, &["rev-parse", "--short", "HEAD"])
}

/// One git command's trimmed stdout, or `None` if git is missing or it failed.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_owned())
}
