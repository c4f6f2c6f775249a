//! The files that deploy pushwire stay in step with the binary.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Scratch;

fn repo_path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

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

/// The `PUSHWIRE_*` variables `pushwire --help` names, one per flag.
fn flag_variables() -> BTreeSet<String> {
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
    flags
}

#[test]
fn example_env_file_lists_every_flag_variable() {
    let flags = flag_variables();
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
fn the_options_table_names_every_flags_variable() {
    let flags = flag_variables();
    let table = env_names(&repo_file("docs/configuration.md"));
    let missing: Vec<_> = flags.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's options table lacks {missing:?}"
    );
}

/// The unit scripts/install.sh installs (binary in /usr/local/bin) and the one the Debian
/// package installs (binary in /usr/bin).
const UNITS: [(&str, &str); 2] = [
    ("systemd/pushwire.service", "/usr/local/bin/pushwire"),
    ("deploy/debian/pushwire.service", "/usr/bin/pushwire"),
];

#[test]
fn unit_runs_the_installed_binary_as_notify_service() {
    for (path, binary) in UNITS {
        let unit = repo_file(path);
        for line in [
            "Type=notify",
            &format!("ExecStartPre={binary} check-config"),
            &format!("ExecStart={binary}"),
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
                "{path} lacks {line:?}"
            );
        }
        // check-config runs before the daemon, with the same environment.
        let pre = unit.find("ExecStartPre=").unwrap();
        assert!(pre < unit.find("\nExecStart=").unwrap(), "{path}");
        assert!(unit.find("EnvironmentFile=").unwrap() < pre, "{path}");
    }
    let install = repo_file("scripts/install.sh");
    assert!(
        install.contains("systemd/pushwire.service") && install.contains("systemd/pushwire.env")
    );
}

#[test]
fn the_packaged_unit_is_the_installed_one_for_usr_bin() {
    // Comments may differ (where each is installed); every setting is the same.
    let settings = |path: &str, binary: &str| -> Vec<String> {
        repo_file(path)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| l.replace(binary, "BINARY"))
            .collect()
    };
    let [(a, a_bin), (b, b_bin)] = UNITS;
    assert_eq!(
        settings(a, a_bin),
        settings(b, b_bin),
        "{a} and {b} differ in more than the binary's path"
    );
    let manifest = repo_file("Cargo.toml");
    for needle in [
        "maintainer-scripts = \"deploy/debian/\"",
        "[\"target/release/pushwire\", \"usr/bin/\", \"755\"]",
        "[\"systemd/pushwire.env\", \"etc/pushwire/pushwire.env\", \"600\"]",
        "[\"clients/php/Pushwire.php\", \"usr/share/pushwire/\", \"644\"]",
        "[\"clients/php/Webhook.php\", \"usr/share/pushwire/\", \"644\"]",
    ] {
        assert!(
            manifest.contains(needle),
            "Cargo.toml's [package.metadata.deb] lacks {needle}"
        );
    }
}

/// Every `#PUSHWIRE_NAME=value` example in systemd/pushwire.env, uncommented as an admin
/// would.
fn example_values() -> Vec<(String, String)> {
    let values: Vec<(String, String)> = repo_file("systemd/pushwire.env")
        .lines()
        .filter_map(|line| line.strip_prefix('#')?.split_once('='))
        .filter(|(name, _)| name.starts_with("PUSHWIRE_") && !name.contains(' '))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert!(
        values.len() >= 10,
        "only {} example variables found",
        values.len()
    );
    values
}

#[test]
fn every_example_value_in_the_env_file_is_accepted() {
    // Uncomment every `#NAME=value` line, as an admin would, but listen on free ports.
    let sock = std::env::temp_dir().join(format!("pushwire-envtest-{}.sock", std::process::id()));
    let cert = common::TestCert::new("example-start");
    let tls = cert.files();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushwire"));
    cmd.env_clear();
    for (name, value) in example_values() {
        // `*_FILE` secrets name files that exist only on a configured host (and conflict
        // with the literal secrets, which are set instead).
        if name.ends_with("_FILE") {
            continue;
        }
        let value = match name.as_str() {
            "PUSHWIRE_WS_LISTEN" | "PUSHWIRE_PUSH_LISTEN" | "PUSHWIRE_HTTP_LISTEN" => {
                "127.0.0.1:0".to_owned()
            }
            "PUSHWIRE_PUSH_UNIX" => sock.display().to_string(),
            // Certificates exist only on a configured host: a throw-away pair instead.
            "PUSHWIRE_TLS_CERT" => tls.cert.display().to_string(),
            "PUSHWIRE_TLS_KEY" => tls.key.display().to_string(),
            _ => value,
        };
        cmd.env(name, value);
    }

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

// --- `pushwire --version` ----------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_git_revision_it_was_built_from() {
    for flag in ["--version", "-V"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .arg(flag)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let prefix = concat!("pushwire ", env!("CARGO_PKG_VERSION"), " (git ");
        let rev = text
            .strip_prefix(prefix)
            .and_then(|t| t.strip_suffix(")\n"))
            .unwrap_or_else(|| panic!("{flag}: {text:?} is not `{prefix}REV)`"));
        if rev == "unknown" {
            // Built outside a git checkout (a tarball): nothing more to check.
            assert!(
                git(
                    Path::new(env!("CARGO_MANIFEST_DIR")),
                    &["rev-parse", "HEAD"]
                )
                .is_none(),
                "built from a checkout, yet the revision is unknown"
            );
            continue;
        }
        let hash = rev.strip_suffix(", dirty").unwrap_or(rev);
        assert!(
            hash.len() >= 7 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{flag}: {rev:?} is not a short hash"
        );
        let commit = format!("{hash}^{{commit}}");
        assert!(
            git(
                Path::new(env!("CARGO_MANIFEST_DIR")),
                &["cat-file", "-e", &commit]
            )
            .is_some(),
            "{flag}: {hash} is no commit of this repository"
        );
    }
}

/// build.rs, compiled on its own and run as cargo would, in checkouts made for the test:
/// a clean one, a dirty one, a directory without git (a tarball), and a directory inside
/// someone else's repository (a vendored copy), which must not take that repository's hash.
#[test]
fn build_script_stamps_hash_dirty_or_unknown() {
    let scratch = Scratch::new("build-script");
    let exe = scratch.path("build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(&rustc)
        .args(["--edition", "2024", "-o", &exe])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
        .output()
        .expect("run rustc");
    assert!(out.status.success(), "rustc build.rs: {out:?}");
    let stamp = |dir: &Path| -> (String, Vec<String>) {
        let out = Command::new(&exe)
            .env("CARGO_MANIFEST_DIR", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build script in {}: {out:?}",
            dir.display()
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let rev = text
            .lines()
            .find_map(|l| l.strip_prefix("cargo:rustc-env=PUSHWIRE_GIT="))
            .unwrap_or_else(|| panic!("no PUSHWIRE_GIT in {text}"))
            .to_owned();
        let watched = text
            .lines()
            .filter_map(|l| l.strip_prefix("cargo:rerun-if-changed="))
            .map(str::to_owned)
            .collect();
        (rev, watched)
    };

    let tarball = scratch.0.join("tarball");
    std::fs::create_dir(&tarball).unwrap();
    assert_eq!(stamp(&tarball).0, "unknown");

    let repo = scratch.0.join("repo");
    std::fs::create_dir_all(repo.join("vendored")).unwrap();
    std::fs::write(repo.join("vendored/file"), "v1").unwrap();
    git(&repo, &["init", "-q"]).expect("git init");
    git(&repo, &["add", "."]).unwrap();
    git(&repo, &["commit", "-q", "-m", "one"]).unwrap();
    let head = git(&repo, &["rev-parse", "--short", "HEAD"]).unwrap();
    let (rev, watched) = stamp(&repo);
    assert_eq!(rev, head);
    for f in [".git/HEAD", ".git/index"] {
        assert!(
            watched.iter().any(|w| Path::new(w) == repo.join(f)),
            "{f} not watched: {watched:?}"
        );
    }
    // Only paths that exist: a missing one would rerun the script on every build.
    for w in &watched {
        let p = repo.join(w);
        assert!(
            p.exists() || matches!(w.as_str(), "build.rs" | "Cargo.toml" | "Cargo.lock" | "src"),
            "{w}"
        );
    }
    std::fs::write(repo.join("vendored/file"), "v2").unwrap();
    assert_eq!(stamp(&repo).0, format!("{head}, dirty"));
    assert_eq!(stamp(&repo.join("vendored")).0, "unknown");
}

// --- `pushwire check-config` -------------------------------------------------------------

/// Listeners on free loopback ports, so a check never collides with anything running.
const FREE_PORTS: [&str; 6] = [
    "--ws-listen",
    "127.0.0.1:0",
    "--push-listen",
    "127.0.0.1:0",
    "--http-listen",
    "127.0.0.1:0",
];

struct Checked {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Checked {
    fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    /// Error lines, each required to name every needle in one of `expected`, in any order.
    fn assert_refused(&self, expected: &[&[&str]]) {
        assert!(
            !self.ok && self.code == Some(1),
            "check-config should refuse (exit 1): {}",
            self.describe()
        );
        assert_eq!(self.stdout, "", "{}", self.describe());
        let errors = self.lines("error: ");
        assert_eq!(
            errors.len(),
            expected.len(),
            "one line per problem: {}",
            self.describe()
        );
        for needles in expected {
            assert!(
                errors.iter().any(|l| needles.iter().all(|n| l.contains(n))),
                "no error line names all of {needles:?}: {}",
                self.describe()
            );
        }
        let other: Vec<_> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("error: ") && !l.starts_with("warning: "))
            .collect();
        assert!(
            other.is_empty(),
            "stray lines {other:?}: {}",
            self.describe()
        );
    }

    /// `config ok` and exit 0, with no warning but these (and the open-files limit's,
    /// which depends on the machine).
    fn assert_ok(&self, warnings: &[&str]) {
        assert!(
            self.ok && self.stdout == "config ok\n",
            "check-config should accept: {}",
            self.describe()
        );
        let got: Vec<_> = self
            .stderr
            .lines()
            .filter(|l| !l.contains("open-files limit"))
            .collect();
        assert_eq!(got.len(), warnings.len(), "{}", self.describe());
        for w in warnings {
            assert!(
                got.iter()
                    .any(|l| l.starts_with("warning: ") && l.contains(w)),
                "no warning {w:?}: {}",
                self.describe()
            );
        }
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `pushwire FLAGS... check-config` with exactly `env` as its environment.
fn check_config(flags: &[&str], env: &[(&str, &str)]) -> Checked {
    check_config_argv(&[flags, &["check-config"]].concat(), env)
}

/// `pushwire ARGV...` (which names `check-config` somewhere) with exactly `env`.
fn check_config_argv(argv: &[&str], env: &[(&str, &str)]) -> Checked {
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .env_clear()
        .envs(env.iter().copied())
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("run pushwire check-config");
    Checked {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A loopback address nothing listens on (bound, then released).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn check_config_accepts_a_good_config_and_leaves_nothing_behind() {
    let secrets = Scratch::new("good-secrets");
    let run_dir = Scratch::new("good-run");
    let jwt = secrets.file("jwt", "s3cret\n");
    let push = secrets.file("push", "an0ther");
    let sock = run_dir.path("push.sock");
    let (ws, push_addr, http) = (free_addr(), free_addr(), free_addr());
    let checked = check_config(
        &[
            "--ws-listen",
            &ws,
            "--push-listen",
            &push_addr,
            "--http-listen",
            &http,
            "--jwt-secret-file",
            &jwt,
            "--push-unix",
            &sock,
            "--allowed-origins",
            "https://app.example.com",
        ],
        &[
            ("PUSHWIRE_PUSH_SECRET_FILE", &push),
            ("PUSHWIRE_PUSH_ALLOW", "127.0.0.0/8,10.0.0.0/8,::1/128"),
            ("PUSHWIRE_REDIS", "redis://127.0.0.1:6379/0"),
            ("PUSHWIRE_WORKER_THREADS", "1"),
        ],
    );
    checked.assert_ok(&[]);
    // Nothing left: not the socket, not the probe next to it, not a listener.
    let left: Vec<_> = std::fs::read_dir(&run_dir.0).unwrap().collect();
    assert!(left.is_empty(), "check-config left {left:?}");
    for addr in [ws, push_addr, http] {
        std::net::TcpListener::bind(&addr)
            .unwrap_or_else(|e| panic!("{addr} still bound after check-config: {e}"));
    }
    // The HTTP door off, the cluster URLs docs/cluster.md names.
    for redis in [
        "rediss://user:pw@redis.example.com:6380/1",
        "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
    ] {
        let mut flags = FREE_PORTS[..4].to_vec();
        flags.extend(["--http-listen", "off", "--redis", redis]);
        check_config(&flags, &[]).assert_ok(&[]);
    }
}

#[test]
fn check_config_refuses_a_missing_secret_file() {
    check_config(
        &[
            &FREE_PORTS[..],
            &["--jwt-secret-file", "/nonexistent/jwt-secret"],
        ]
        .concat(),
        &[],
    )
    .assert_refused(&[&[
        "--jwt-secret-file",
        "/nonexistent/jwt-secret",
        "No such file",
    ]]);
    // The shipped env file's paths, on a host without those credentials.
    check_config(
        &FREE_PORTS,
        &[
            (
                "PUSHWIRE_PUSH_SECRET_FILE",
                "/run/credentials/pushwire.service/push-secret",
            ),
            (
                "PUSHWIRE_JWT_SECRET_FILE",
                "/run/credentials/pushwire.service/jwt-secret",
            ),
        ],
    )
    .assert_refused(&[
        &["PUSHWIRE_PUSH_SECRET_FILE", "push-secret"],
        &["PUSHWIRE_JWT_SECRET_FILE", "jwt-secret"],
    ]);
}

#[test]
fn check_config_refuses_an_empty_secret_file() {
    let dir = Scratch::new("empty-secret");
    // Only a newline: the daemon ignores a trailing newline, so this is empty.
    let empty = dir.file("push-secret", "\n");
    check_config(&FREE_PORTS, &[("PUSHWIRE_PUSH_SECRET_FILE", &empty)]).assert_refused(&[&[
        "--push-secret-file",
        &empty,
        "empty secret",
    ]]);
    let not_a_file = dir.0.display().to_string();
    check_config(&FREE_PORTS, &[("PUSHWIRE_JWT_SECRET_FILE", &not_a_file)])
        .assert_refused(&[&["--jwt-secret-file", &not_a_file]]);
}

/// `--redis-prefix` follows its rules (`docs/cluster.md`) from the flag and from the
/// environment; a good one is accepted.
#[test]
fn check_config_refuses_a_bad_redis_prefix() {
    for bad in ["a{b}", "stg:1", "two words", ""] {
        check_config(&[&FREE_PORTS[..], &["--redis-prefix", bad]].concat(), &[])
            .assert_refused(&[&["--redis-prefix", "a Redis prefix is"]]);
    }
    let long = "p".repeat(33);
    check_config(&FREE_PORTS, &[("PUSHWIRE_REDIS_PREFIX", &long)])
        .assert_refused(&[&["PUSHWIRE_REDIS_PREFIX", "1 to 32"]]);
    check_config(
        &[
            &FREE_PORTS[..],
            &[
                "--redis",
                "redis://127.0.0.1:1/",
                "--redis-prefix",
                "stg-2.eu_w",
            ],
        ]
        .concat(),
        &[],
    )
    .assert_ok(&[]);
}

#[test]
fn check_config_refuses_a_bad_cidr_in_push_allow() {
    check_config(
        &FREE_PORTS,
        &[("PUSHWIRE_PUSH_ALLOW", "127.0.0.0/8,10.0.0.0/33")],
    )
    .assert_refused(&[&["PUSHWIRE_PUSH_ALLOW", "10.0.0.0/33", "--push-allow"]]);
    check_config(
        &[&FREE_PORTS[..], &["--push-allow", "10.0.0.0/8,nonsense"]].concat(),
        &[],
    )
    .assert_refused(&[&["--push-allow", "nonsense"]]);
    // Clap stops at its first refusal; check-config still names every bad variable.
    check_config(
        &[],
        &[
            ("PUSHWIRE_PUSH_ALLOW", "10.0.0.0/33"),
            ("PUSHWIRE_WS_LISTEN", "localhost:1234"),
            ("PUSHWIRE_QUEUE_DEPTH", "many"),
        ],
    )
    .assert_refused(&[
        &["PUSHWIRE_PUSH_ALLOW", "10.0.0.0/33"],
        &["PUSHWIRE_WS_LISTEN", "localhost:1234"],
        &["PUSHWIRE_QUEUE_DEPTH", "many"],
    ]);
    // A flag on the command line wins over its variable, as for the daemon.
    check_config(
        &[&FREE_PORTS[..], &["--push-allow", "10.0.0.0/8"]].concat(),
        &[("PUSHWIRE_PUSH_ALLOW", "10.0.0.0/33")],
    )
    .assert_ok(&[]);
}

#[test]
fn check_config_refuses_a_busy_port_naming_flag_and_address() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    check_config(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "--push-listen",
            &addr,
            "--http-listen",
            "off",
        ],
        &[],
    )
    .assert_refused(&[&["--push-listen", &addr, "in use"]]);
    check_config(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "--push-listen",
            "127.0.0.1:0",
            "--http-listen",
            &addr,
        ],
        &[],
    )
    .assert_refused(&[&["--http-listen", &addr, "in use"]]);
    // --no-bind: checking an edited env file while the daemon holds its ports.
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .env_clear()
        .args([
            "--ws-listen",
            &addr,
            "--http-listen",
            "off",
            "check-config",
            "--no-bind",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"config ok\n" && out.stderr.is_empty(),
        "--no-bind with a busy port: {out:?}"
    );
    // Two flags naming one free address collide as they would in the daemon.
    let twice = free_addr();
    check_config(
        &[
            "--ws-listen",
            &twice,
            "--push-listen",
            &twice,
            "--http-listen",
            "off",
        ],
        &[],
    )
    .assert_refused(&[&["--push-listen", &twice, "in use"]]);
    drop(busy);
}

/// The daemon's flags mean the same after the subcommand as before it
/// (`pushwire check-config --ws-listen ADDR`), each of them, mixed in any order.
#[test]
fn daemon_flags_are_taken_after_the_subcommand_too() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let after = |flags: &[&str]| check_config_argv(&[&["check-config"], flags].concat(), &[]);
    after(&[
        "--ws-listen",
        &addr,
        "--push-listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
    ])
    .assert_refused(&[&["--ws-listen", &addr, "in use"]]);
    after(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--push-listen",
        "127.0.0.1:0",
        "--http-listen",
        &addr,
    ])
    .assert_refused(&[&["--http-listen", &addr, "in use"]]);
    // Some before, some after, the subcommand's own flag among them.
    check_config_argv(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "check-config",
            "--queue-depth",
            "0",
            "--push-listen",
            "127.0.0.1:0",
            "--no-bind",
            "--http-listen",
            &addr,
        ],
        &[],
    )
    .assert_ok(&["--queue-depth 0 is raised", "capped at 1"]);
    after(&["--no-bind", "--push-allow", "10.0.0.0/8,nonsense"])
        .assert_refused(&[&["--push-allow", "nonsense"]]);
    // A flag after it wins over its variable, as one before it does.
    check_config_argv(
        &["check-config", "--no-bind", "--push-allow=10.0.0.0/8"],
        &[("PUSHWIRE_PUSH_ALLOW", "10.0.0.0/33")],
    )
    .assert_ok(&[]);
    let secret = Scratch::new("after");
    let missing = secret.path("missing");
    after(&["--no-bind", "--jwt-secret-file", &missing])
        .assert_refused(&[&["--jwt-secret-file", "missing"]]);
    drop(busy);
}

#[test]
fn check_config_refuses_bad_redis_urls_and_unix_paths_one_line_each() {
    let dir = Scratch::new("unix");
    let plain_file = dir.file("not-a-socket", "");
    let checked = check_config(
        &[
            &FREE_PORTS[..],
            &[
                "--redis",
                "http://user:hunter2@127.0.0.1:6379",
                "--push-unix",
                "/nonexistent-dir/push.sock",
                "--jwt-secret-file",
                "/nonexistent/jwt",
            ],
        ]
        .concat(),
        &[],
    );
    checked.assert_refused(&[
        &["--redis", "not a Redis URL", "http://***@127.0.0.1:6379"],
        &["--push-unix", "/nonexistent-dir"],
        &["--jwt-secret-file"],
    ]);
    assert!(
        !checked.stderr.contains("hunter2"),
        "password printed: {}",
        checked.stderr
    );
    for (url, why) in [
        ("redis://", "host"),
        ("redis-cluster://h:1?node=nohostport", "node"),
    ] {
        check_config(&[&FREE_PORTS[..], &["--redis", url]].concat(), &[])
            .assert_refused(&[&["--redis", url, why]]);
    }
    check_config(
        &[&FREE_PORTS[..], &["--push-unix", &plain_file]].concat(),
        &[],
    )
    .assert_refused(&[&["--push-unix", "not a socket"]]);
}

#[test]
fn check_config_warns_about_what_the_daemon_would_change() {
    check_config(
        &[
            &FREE_PORTS[..],
            &[
                "--queue-depth",
                "0",
                "--max-message-bytes",
                "10",
                "--http-max-header-bytes",
                "100",
                "--max-ws-connections",
                "800",
                "--max-pending-handshakes",
                "5000",
            ],
        ]
        .concat(),
        &[],
    )
    .assert_ok(&[
        "--queue-depth 0 is raised to 1",
        "--max-message-bytes 10 is below --max-uid-bytes",
        "--http-max-header-bytes 100 is raised to 8192",
        "--max-pending-handshakes 5000 must stay below --max-ws-connections 800",
        // A history replay must fit the connection's queue.
        "--history-messages 100 is above --queue-depth 1",
    ]);
    // A push door beyond loopback with neither allow-list nor secret.
    check_config(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "--push-listen",
            "0.0.0.0:0",
            "--http-listen",
            "off",
        ],
        &[],
    )
    .assert_ok(&["push port 0.0.0.0:0 is not on loopback"]);
    check_config(
        &[
            "--ws-listen",
            "127.0.0.1:0",
            "--push-listen",
            "0.0.0.0:0",
            "--http-listen",
            "off",
        ],
        &[("PUSHWIRE_PUSH_SECRET", "s")],
    )
    .assert_ok(&[]);
}

#[test]
fn check_config_accepts_every_example_value_in_the_env_file() {
    let dir = Scratch::new("env-examples");
    let sock = dir.path("push.sock");
    let secret = dir.file("secret", "s3cret\n");
    let cert = common::TestCert::new("examples");
    let tls_cert = cert.files().cert.display().to_string();
    let tls_key = cert.files().key.display().to_string();
    let reload_env = repo_path("systemd/pushwire.env");
    let examples = example_values();
    // Once with the literal secrets, once with the secret files instead (they conflict).
    for files in [false, true] {
        let mut env = Vec::new();
        for (name, value) in &examples {
            let is_file = name.ends_with("_SECRET_FILE");
            let is_literal = name.ends_with("_SECRET");
            if (is_file && !files) || (is_literal && files) {
                continue;
            }
            let value = match name.as_str() {
                "PUSHWIRE_WS_LISTEN" | "PUSHWIRE_PUSH_LISTEN" | "PUSHWIRE_HTTP_LISTEN" => {
                    "127.0.0.1:0"
                }
                // /run/pushwire/ is the unit's RuntimeDirectory, made when it starts.
                "PUSHWIRE_PUSH_UNIX" => &sock,
                // /run/credentials/ is made by LoadCredential= when the unit starts.
                _ if is_file => &secret,
                "PUSHWIRE_TLS_CERT" => &tls_cert,
                "PUSHWIRE_TLS_KEY" => &tls_key,
                "PUSHWIRE_RELOAD_ENV_FILE" => &reload_env,
                _ => value,
            };
            env.push((name.as_str(), value));
        }
        check_config(&[], &env).assert_ok(&[]);
    }
}

/// TLS files and the reload env file are checked as the daemon (and its next reload)
/// would read them: a good pair passes, a broken certificate, a missing key and a bad
/// network list in the reload file are each one error line naming the file.
#[test]
fn check_config_reads_the_tls_files_and_the_reload_env_file() {
    let cert = common::TestCert::new("check");
    let files = cert.files();
    let (tls_cert, tls_key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let scratch = Scratch::new("tls-check");
    let good_env = scratch.file("good.env", "PUSHWIRE_PUSH_ALLOW=127.0.0.0/8\n");
    let mut flags = FREE_PORTS.to_vec();
    flags.extend(["--tls-cert", &tls_cert, "--tls-key", &tls_key]);
    flags.extend(["--reload-env-file", &good_env]);
    check_config(&flags, &[]).assert_ok(&[]);

    let garbage = scratch.file("garbage.pem", "not a certificate\n");
    let missing = scratch.path("missing.key");
    let bad_env = scratch.file("bad.env", "PUSHWIRE_PUSH_ALLOW=10.0.0.0/33\n");
    let mut flags = FREE_PORTS.to_vec();
    flags.extend(["--tls-cert", &garbage, "--tls-key", &tls_key]);
    flags.extend(["--reload-env-file", &bad_env]);
    check_config(&flags, &[]).assert_refused(&[
        &["--tls-cert", "garbage.pem", "no certificate"],
        &["--reload-env-file", "PUSHWIRE_PUSH_ALLOW"],
    ]);
    let mut flags = FREE_PORTS.to_vec();
    flags.extend(["--tls-cert", &tls_cert, "--tls-key", &missing]);
    check_config(&flags, &[]).assert_refused(&[&["--tls-cert", "missing.key"]]);
}
