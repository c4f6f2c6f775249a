//! The files that deploy pushwire stay in step with the binary.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `PUSHWIRE_*` names in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("PUSHWIRE_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if end > "PUSHWIRE_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn example_env_file_lists_every_flag_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .arg("--help")
        .output()
        .expect("run pushwire --help");
    assert!(out.status.success(), "pushwire --help: {out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = env_names(&help);
    assert!(
        flags.contains("PUSHWIRE_WS_LISTEN"),
        "--help shows no env names: {help}"
    );

    let file = env_names(&repo_file("systemd/pushwire.env"));
    let missing: Vec<_> = flags.difference(&file).collect();
    let unknown: Vec<_> = file.difference(&flags).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "systemd/pushwire.env is out of step with `pushwire --help`: \
         missing {missing:?}, not a flag {unknown:?}"
    );
}

#[test]
fn unit_runs_the_installed_binary_as_notify_service() {
    let unit = repo_file("systemd/pushwire.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/pushwire",
        "EnvironmentFile=-/etc/pushwire/pushwire.env",
        "KillSignal=SIGTERM",
        "DynamicUser=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=1048576",
        // systemd counts death by SIGHUP/SIGTERM as clean: on-failure would stay down.
        "Restart=always",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "pushwire.service lacks {line:?}"
        );
    }
    let install = repo_file("scripts/install.sh");
    assert!(
        install.contains("systemd/pushwire.service") && install.contains("systemd/pushwire.env")
    );
}

#[test]
fn every_example_value_in_the_env_file_is_accepted() {
    // Uncomment every `#NAME=value` line, as an admin would, but listen on free ports.
    let file = repo_file("systemd/pushwire.env");
    let sock = std::env::temp_dir().join(format!("pushwire-envtest-{}.sock", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushwire"));
    cmd.env_clear();
    let mut set = 0;
    for line in file.lines() {
        let Some((name, value)) = line.strip_prefix('#').and_then(|l| l.split_once('=')) else {
            continue;
        };
        if !name.starts_with("PUSHWIRE_") || name.contains(' ') {
            continue;
        }
        // `*_FILE` secrets name files that exist only on a configured host (and conflict
        // with the literal secrets, which are set instead).
        if name.ends_with("_FILE") {
            continue;
        }
        let value = match name {
            "PUSHWIRE_WS_LISTEN" | "PUSHWIRE_PUSH_LISTEN" => "127.0.0.1:0".to_owned(),
            "PUSHWIRE_PUSH_UNIX" => sock.display().to_string(),
            _ => value.to_owned(),
        };
        cmd.env(name, value);
        set += 1;
    }
    assert!(set >= 10, "only {set} example variables found");

    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pushwire");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let listening = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("listening") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    assert!(
        listening,
        "pushwire did not start with the env file's example values:\n{}",
        seen.join("\n")
    );
}
