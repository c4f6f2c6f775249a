//! The docs hold together: every relative link in the README and `docs/` names a file that
//! exists and, with `#anchor`, a heading in it (GitHub's slugs); the README stays a front
//! door whose map names every doc. (`tests/deployment.rs` checks that the options table in
//! `docs/configuration.md` names every flag's variable.)
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The Markdown files whose links are checked: the README, every `docs/*.md`, and the
/// READMEs of the PHP client and the fuzz targets.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![
        repo().join("README.md"),
        repo().join("clients/php/README.md"),
        repo().join("fuzz/README.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks, with inline code spans removed (a link
/// or a `#` inside code is not one).
fn prose_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push(strip_code_spans(line)),
            _ => {}
        }
    }
    out
}

/// `line` without its code spans: a run of N backticks opens one, the next run of exactly
/// N closes it; an unclosed run is literal text.
fn strip_code_spans(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            let next = line[i..].find('`').map_or(b.len(), |k| i + k);
            out.push_str(&line[i..next]);
            i = next;
            continue;
        }
        let run = b[i..].iter().take_while(|&&c| c == b'`').count();
        let mut j = i + run;
        let mut close = None;
        while j < b.len() {
            if b[j] == b'`' {
                let r = b[j..].iter().take_while(|&&c| c == b'`').count();
                if r == run {
                    close = Some(j + r);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                out.push(' ');
                i = end;
            }
            None => {
                out.push_str(&line[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// Link targets in `text`: inline `[text](target)` and reference definitions `[x]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            targets.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        let t = line.trim_start();
        if t.starts_with('[')
            && let Some(i) = t.find("]: ")
        {
            targets.push(t[i + 3..].to_owned());
        }
    }
    targets
        .into_iter()
        .map(|t| t.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// GitHub's anchor for a heading: link targets dropped, lowercase, everything but
/// letters, digits, spaces, `-` and `_` dropped, spaces become `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        text.push_str(&rest[..i]);
        rest = rest[i + 2..]
            .find(')')
            .map_or("", |e| &rest[i + 2 + e + 1..]);
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of `text`'s headings (ATX, outside code), a repeated one numbered `-1`,
/// `-2`, ... as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
            continue;
        }
        let hashes = t.bytes().take_while(|&c| c == b'#').count();
        if fence || !(1..=6).contains(&hashes) || !t[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&t[hashes + 1..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// What is wrong with the links of `text` (the file at `file`), one line per bad link,
/// and how many relative links and anchors were checked.
fn bad_links(file: &Path, text: &str) -> (Vec<String>, usize, usize) {
    let dir = file.parent().expect("a file has a directory");
    let (mut bad, mut links, mut anchored) = (Vec::new(), 0, 0);
    for target in link_targets(text) {
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        links += 1;
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !resolved.exists() {
            bad.push(format!(
                "{}: link {target:?}: {} does not exist",
                file.display(),
                resolved.display()
            ));
            continue;
        }
        if let Some(anchor) = anchor {
            anchored += 1;
            let heads = if path.is_empty() {
                anchors(text)
            } else {
                anchors(&read(&resolved))
            };
            if !heads.contains(anchor) {
                bad.push(format!(
                    "{}: link {target:?}: no heading with anchor #{anchor} in {}",
                    file.display(),
                    resolved.display()
                ));
            }
        }
    }
    (bad, links, anchored)
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let (mut bad, mut links, mut anchored) = (Vec::new(), 0, 0);
    for file in markdown_files() {
        let (b, l, a) = bad_links(&file, &read(&file));
        bad.extend(b);
        links += l;
        anchored += a;
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
    // The check saw the docs' links at all (the README's map alone has a dozen).
    assert!(
        links >= 40 && anchored >= 10,
        "{links} links, {anchored} anchors"
    );
}

#[test]
fn the_link_check_finds_a_missing_file_and_a_missing_anchor() {
    let text = "\
See [a](docs/no-such-doc.md), [b](docs/cluster.md#no-such-heading), \
[c](docs/cluster.md#sizing), [d](#top), [e](https://example.com/x.md) and `[f](nope.md)`.

```text
[g](nope.md)
```

# Top
";
    let (bad, links, anchored) = bad_links(&repo().join("README.md"), text);
    assert_eq!((links, anchored), (4, 3), "{bad:?}");
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("no-such-doc.md") && bad[0].contains("does not exist"));
    assert!(bad[1].contains("#no-such-heading"), "{bad:?}");
}

#[test]
fn slugs_follow_github() {
    for (heading, anchor) in [
        ("Behind nginx (`wss://`)", "behind-nginx-wss"),
        ("Cluster mode (`--redis`)", "cluster-mode---redis"),
        (
            "Cluster mode: 3 × 19k browsers (2026-12-01)",
            "cluster-mode-3--19k-browsers-2026-12-01",
        ),
        (
            "Metrics (`GET /metrics`, `/stats`, `pushwire status`)",
            "metrics-get-metrics-stats-pushwire-status",
        ),
        ("See [the docs](docs/x.md) now", "see-the-docs-now"),
    ] {
        assert_eq!(slug(heading), anchor, "{heading}");
    }
    assert_eq!(
        anchors("# A\n## A\n```\n# A\n```\n### A\n"),
        ["a", "a-1", "a-2"].map(String::from).into()
    );
}

#[test]
fn the_readme_is_a_front_door_whose_map_names_every_doc() {
    let readme = read(&repo().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: reference text goes in docs/"
    );
    let linked: BTreeSet<String> = link_targets(&readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap_or("").to_owned())
        .collect();
    for file in markdown_files() {
        let rel = file.strip_prefix(repo()).expect("under the repo");
        if rel.starts_with("docs") {
            let rel = rel.to_str().expect("UTF-8 path");
            assert!(linked.contains(rel), "README.md's map lacks {rel}");
        }
    }
}
