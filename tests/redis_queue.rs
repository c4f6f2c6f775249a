//! The Redis-queue door (`--redis-queue`, issue 22; seed 000's push centre) on the real
//! daemon and a real `redis-server`: php-cli `LPUSH`es with php-redis, as the seed's
//! controller does; pages get every plain element byte for byte, in order, once; push
//! lines run as the push port runs them; replies land on the named list; and no element
//! is lost across a `kill -9` of the consumer, between take and send or anywhere else.
//!
//! These tests never skip: php-cli, php-redis and redis-server are required
//! (`scripts/test.sh` installs them).
mod common;

use std::time::Duration;

use common::redis::{Redis, RedisCluster};
use common::{Daemon, Launch, STEP, WsClient, poll_until};
use tokio::process::Command;

/// `php tests/php/lpush.php PORT KEY ELEMENTS...`
async fn lpush(redis: &Redis, key: &str, elements: &[&str]) {
    lpush_to(&redis.port.to_string(), key, elements).await;
}

/// `php tests/php/lpush.php TARGET KEY ELEMENTS...`: TARGET a port, or a Redis Cluster's
/// seed list (php-redis's `RedisCluster`).
async fn lpush_to(target: &str, key: &str, elements: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/lpush.php");
    let out = Command::new("php")
        .arg(script)
        .arg(target)
        .arg(key)
        .args(elements)
        .output()
        .await
        .expect("php runs");
    assert!(
        out.status.success() && out.stdout.ends_with(b"done\n"),
        "lpush: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `redis-cli` with `args` against `redis`.
async fn cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(redis.cli_args())
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn page(daemon: &Daemon, uid: &str) -> WsClient {
    let mut ws = WsClient::connect(&daemon.ws_url()).await;
    ws.bind(uid, daemon.push_addr).await;
    ws
}

#[tokio::test]
async fn lpushed_elements_reach_every_page_in_order_and_push_lines_run() {
    let redis = Redis::start().await;
    let daemon = Launch::new()
        .args(&[
            "--redis-queue-url",
            &redis.url(),
            "--redis-queue",
            "mc=mc:replies",
            "--redis-queue-max-bytes",
            "64",
        ])
        .start()
        .await;
    daemon.wait_log("consuming=true", STEP).await;
    let (mut a, mut b) = (page(&daemon, "a").await, page(&daemon, "b").await);
    let long = "x".repeat(65);
    lpush(
        &redis,
        "mc",
        &[
            "Hello from ThinkPHP",
            r#"{"uid":"a","percent":"88%"}"#,
            "/send b only b",
            "line one\nline two",
            r#"{"not":"a push line"}"#,
            &long,
            "last",
        ],
    )
    .await;
    let all = [
        "Hello from ThinkPHP",
        "line one\nline two",
        r#"{"not":"a push line"}"#,
        "last",
    ];
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..5 {
        got_a.push(a.recv_text().await);
    }
    for _ in 0..5 {
        got_b.push(b.recv_text().await);
    }
    assert_eq!(
        got_a,
        [
            all[0],
            r#"{"uid":"a","percent":"88%"}"#,
            all[1],
            all[2],
            all[3]
        ]
    );
    assert_eq!(got_b, [all[0], "only b", all[1], all[2], all[3]]);
    a.expect_silence(Duration::from_millis(300)).await;
    daemon.wait_log("element refused: too long", STEP).await;
    // One reply per element, in order (LPUSH: newest first).
    poll_until(STEP, "seven replies", || async {
        cli(&redis, &["LLEN", "mc:replies"]).await.trim() == "7"
    })
    .await;
    let replies = cli(&redis, &["LRANGE", "mc:replies", "0", "-1"]).await;
    let mut replies: Vec<&str> = replies.lines().collect();
    replies.reverse();
    assert_eq!(
        replies,
        [
            "ok",
            "ok",
            r#"{"ok":true,"uids":1,"reached":1,"connections":1,"refused":0}"#,
            "ok",
            "ok",
            r#"{"ok":false,"error":"element longer than 64 bytes"}"#,
            "ok"
        ]
    );
    assert_eq!(cli(&redis, &["LLEN", "mc"]).await.trim(), "0");
    assert_eq!(
        cli(&redis, &["LLEN", "{mc}:pushwire:processing"])
            .await
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn an_element_taken_by_a_consumer_that_died_is_run_first() {
    let redis = Redis::start().await;
    // What a pushwire killed between take and send leaves: the element on the
    // processing list, the rest still queued, and its consumer lease until it expires.
    cli(
        &redis,
        &["SET", "{mc}:pushwire:consumer", "killed", "PX", "2000"],
    )
    .await;
    cli(
        &redis,
        &["LPUSH", "{mc}:pushwire:processing", "taken, never sent"],
    )
    .await;
    lpush(&redis, "mc", &["next", "after"]).await;
    let daemon = Launch::new()
        .args(&["--redis-queue-url", &redis.url(), "--redis-queue", "mc"])
        .start()
        .await;
    let mut p = page(&daemon, "p").await;
    // Nothing runs while the dead consumer's lease lasts; then its element first.
    for want in ["taken, never sent", "next", "after"] {
        let got = tokio::time::timeout(STEP, p.recv_text()).await;
        assert_eq!(got.as_deref().ok(), Some(want));
    }
    p.expect_silence(Duration::from_millis(300)).await;
}

async fn no_element_is_lost_across_a_kill_9(url: &str, redis: &Redis) {
    let a = Launch::new()
        .args(&[
            "--redis",
            url,
            "--redis-queue",
            "mc",
            "--redis-queue-rate",
            "50",
        ])
        .start()
        .await;
    a.wait_log("consuming=true", STEP).await;
    let b = Launch::new()
        .args(&[
            "--redis",
            url,
            "--redis-queue",
            "mc",
            "--redis-queue-rate",
            "50",
        ])
        .start()
        .await;
    b.wait_log("consuming=false", STEP).await;
    let mut on_b = page(&b, "watcher").await;
    let elements: Vec<String> = (0..100).map(|i| format!("e{i:03}")).collect();
    let refs: Vec<&str> = elements.iter().map(String::as_str).collect();
    lpush(redis, "mc", &refs).await;
    // Once cluster-wide: A consumes, B's page gets each from A, once.
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(on_b.recv_text().await);
    }
    assert_eq!(got, elements[..20]);
    let mut a = a;
    a.child.kill().await.expect("kill -9 the consumer");
    // B takes over once A's lease runs out (5 s) and runs the rest, in order.
    loop {
        match tokio::time::timeout(Duration::from_secs(15), on_b.recv_text()).await {
            Ok(t) => {
                got.push(t);
                if got.last().map(String::as_str) == Some("e099") {
                    break;
                }
            }
            Err(_) => panic!("B's page got {} elements: {got:?}", got.len()),
        }
    }
    let mut deduped = got.clone();
    deduped.dedup();
    assert_eq!(deduped, elements, "every element, in order");
    assert!(
        got.len() - deduped.len() <= 1,
        "at most the one element in flight twice: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_element_is_lost_across_a_kill_9_on_standalone_redis() {
    let redis = Redis::start().await;
    no_element_is_lost_across_a_kill_9(&redis.url(), &redis).await;
}

/// On a three-master Redis Cluster: three lists whose slots are on three different
/// masters (`redis-cli --cluster create` gives them 0-5460, 5461-10922, 10923-16383),
/// each consumed by one of two nodes (its lease), php-cli's `RedisCluster` `LPUSH`ing to
/// them: every page on either node gets every element once, each list's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lpushed_elements_reach_every_page_once_in_order_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let lists = [("orders", 105), ("mc", 8627), ("chat", 14028)];
    for (key, slot) in lists {
        let got = Command::new("redis-cli")
            .args(cluster.cli_args())
            .args(["CLUSTER", "KEYSLOT", key])
            .output()
            .await
            .expect("redis-cli runs");
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            slot.to_string()
        );
    }
    let url = cluster.url();
    let args = [
        "--redis",
        &url,
        "--redis-queue",
        "orders",
        "--redis-queue",
        "mc",
        "--redis-queue",
        "chat",
    ];
    let a = Launch::new().args(&args).start().await;
    let b = Launch::new().args(&args).start().await;
    // Each list has its consumer before anything is pushed (else the first elements
    // would wait out a lease, which is fine but slow).
    for key in ["orders", "mc", "chat"] {
        poll_until(STEP * 2, "a consumer for each list", || async {
            let line = format!("list={key} consuming=true");
            a.log().contains(&line) || b.log().contains(&line)
        })
        .await;
    }
    let mut pages = [
        page(&a, "pa").await,
        page(&b, "pb").await,
        page(&b, "pb2").await,
    ];
    let per_list = 30;
    let mut want = Vec::new();
    for (key, _) in lists {
        let elements: Vec<String> = (0..per_list).map(|i| format!("{key}-{i:02}")).collect();
        let refs: Vec<&str> = elements.iter().map(String::as_str).collect();
        lpush_to(&cluster.seeds(), key, &refs).await;
        want.push(elements);
    }
    for page in &mut pages {
        let mut got = Vec::new();
        while got.len() < lists.len() * per_list {
            match tokio::time::timeout(STEP, page.recv_text()).await {
                Ok(t) => got.push(t),
                Err(_) => panic!("a page got {} elements: {got:?}", got.len()),
            }
        }
        page.expect_silence(Duration::from_millis(300)).await;
        for ((key, _), want) in lists.iter().zip(&want) {
            let of_list: Vec<&String> = got
                .iter()
                .filter(|t| t.starts_with(&format!("{key}-")))
                .collect();
            assert_eq!(
                of_list,
                want.iter().collect::<Vec<_>>(),
                "{key}: once, in order"
            );
        }
    }
}
