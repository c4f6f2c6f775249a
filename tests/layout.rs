//! The layering of `src/` (`docs/layout.md`), checked on the source itself: what a backend
//! command means is decided in one place for both modes, so the backend doors and the
//! service never name the registry or the cluster (they reach connections only through
//! the service and its `nodes`), the modules import each other without a cycle, and
//! every Redis name is spelt in one place, under the node's `--redis-prefix`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A file's code: its unit tests and comments left out (a doc comment may say why a
/// door does not call the cluster).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names a layer must never use in its code, file by file: `(file, name)`.
fn named(files: &[PathBuf], names: &[&str]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in files {
        let code = code(file);
        for name in names {
            if code.contains(name) {
                let shown = file.strip_prefix(src()).unwrap_or(file);
                found.push((shown.display().to_string(), (*name).to_owned()));
            }
        }
    }
    found
}

/// The registry and the cluster, in every way code can reach them.
const ENGINE_INSIDES: [&str; 6] = [
    "registry",
    "Registry",
    "crate::cluster",
    "Cluster",
    ".cluster",
    "cluster::",
];

#[test]
fn backend_doors_and_the_service_never_name_the_registry_or_the_cluster() {
    let mut layer = rust_files(&src().join("doors"));
    let service = rust_files(&src().join("service"));
    assert!(
        layer.len() >= 5 && service.len() >= 5,
        "{layer:?} {service:?}"
    );
    layer.extend(service);
    assert_eq!(named(&layer, &ENGINE_INSIDES), Vec::new());
}

#[test]
fn the_check_sees_a_door_that_reaches_the_registry() {
    let dir = std::env::temp_dir().join(format!("pushwire-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let door = dir.join("door.rs");
    std::fs::write(
        &door,
        "// The registry is not named here (a comment).\nfn f(ctx: &State) { ctx.registry.push(\"u\", &m); }\n#[cfg(test)]\nmod t { use crate::cluster::Cluster; }\n",
    )
    .unwrap();
    let found = named(&[door], &ENGINE_INSIDES);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].1, "registry");
}

/// How a Redis name spelt with the default prefix looks in code: `pw:…`, `{pw}:…`, or
/// `{{pw}}:…` in a `format!`.
const HARD_CODED_REDIS_NAMES: [&str; 3] = ["pw:", "{pw}", "{{pw}}"];

/// Every Redis key and channel is spelt in `src/cluster/names.rs`, under the node's
/// `--redis-prefix`: a name written anywhere else would be shared by clusters that were
/// given different prefixes (they would hear each other's pushes on one Redis).
#[test]
fn redis_names_are_spelt_only_under_the_prefix() {
    let files: Vec<PathBuf> = rust_files(&src())
        .into_iter()
        .filter(|f| !f.ends_with("cluster/names.rs"))
        .collect();
    assert!(files.len() > 30, "{files:?}");
    assert!(src().join("cluster/names.rs").exists());
    assert_eq!(named(&files, &HARD_CODED_REDIS_NAMES), Vec::new());
}

#[test]
fn the_check_sees_a_hard_coded_redis_name() {
    let dir = std::env::temp_dir().join(format!("pushwire-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("store.rs");
    std::fs::write(
        &file,
        "// `pw:u:<uid>` in a comment is fine.\nfn k(u: &str) -> String { format!(\"{{pw}}:x:{u}\") }\n",
    )
    .unwrap();
    let found = named(&[file], &HARD_CODED_REDIS_NAMES);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 2, "{found:?}");
}

/// The top-level module a file belongs to (`service/push.rs` → `service`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap_or(path);
    let first = rel.components().next().expect("a path under src");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// `crate::NAME` uses of each top-level module (in `crate::{a, b::c}` groups too).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let from = module_of(&file);
        let code = code(&file);
        let mut used = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("");
                    used.insert(name.to_owned());
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(name);
            }
        }
        let entry = edges.entry(from.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| !m.is_empty() && *m != from));
    }
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for deps in edges.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    edges
}

/// A cycle of imports in `edges`, if there is one (depth first: a module met again
/// while still on the path closes a cycle).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(d, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let edges = imports();
    assert!(edges.get("service").is_some_and(|d| d.contains("nodes")));
    assert!(edges.get("cluster").is_some_and(|d| d.contains("nodes")));
    assert_eq!(
        find_cycle(&edges),
        None,
        "an import cycle among src/ modules"
    );
    let mut looped = edges.clone();
    looped
        .entry("nodes".into())
        .or_default()
        .insert("service".into());
    let cycle = find_cycle(&looped).expect("the cycle added is found");
    assert!(
        cycle.iter().any(|m| m == "nodes") && cycle.iter().any(|m| m == "service"),
        "{cycle:?}"
    );
}

/// The load tool is a workspace member of its own (`bench/`): the daemon's package has
/// one program, the daemon (`src/main.rs`, no `src/bin/`), and builds none of the
/// tool's code; the tool forbids `unsafe` and keeps a file per scenario, none over
/// ~1,000 lines.
#[test]
fn the_load_tool_is_a_workspace_member_of_its_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!src().join("bin").exists(), "src/bin/ is back");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        !manifest.contains("[[bin]]"),
        "a second program in the daemon's package"
    );
    assert!(
        manifest.contains(r#"members = [".", "bench"]"#),
        "{manifest}"
    );
    let bench = root.join("bench");
    let own = std::fs::read_to_string(bench.join("Cargo.toml")).expect("bench/Cargo.toml");
    assert!(own.contains(r#"name = "pushwire-bench""#), "{own}");
    let main = std::fs::read_to_string(bench.join("src/main.rs")).expect("bench/src/main.rs");
    assert!(main.contains("#![forbid(unsafe_code)]"));
    let files = rust_files(&bench.join("src"));
    let scenarios = rust_files(&bench.join("src/scenarios"));
    for scenario in ["storm", "fanout", "throughput", "cluster_fanout", "floor"] {
        assert!(
            scenarios
                .iter()
                .any(|f| f.ends_with(format!("{scenario}.rs"))),
            "no scenarios/{scenario}.rs in {scenarios:?}"
        );
    }
    let long: Vec<(String, usize)> = files
        .iter()
        .map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (f.display().to_string(), lines)
        })
        .filter(|(_, lines)| *lines > 1_000)
        .collect();
    assert_eq!(long, Vec::new(), "files over 1,000 lines");
}
