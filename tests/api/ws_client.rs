//! The `ws-client` binary against a real server: watch prints the feed,
//! load opens many watchers and reports latency.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, spawn_app};

/// The workspace's `ws-client` binary. `scripts/test` builds the whole
/// workspace first; a run of this test binary alone builds it when it is
/// missing or older than its sources.
fn ws_client() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_flashdrop")).with_file_name("ws-client");
            let modified = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ws-client/src");
            let newest_source = std::fs::read_dir(&src)
                .unwrap()
                .filter_map(|e| modified(&e.ok()?.path()))
                .max();
            if modified(&bin).is_none() || modified(&bin) < newest_source {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-q", "-p", "ws-client"])
                    .status()
                    .unwrap();
                assert!(status.success(), "cargo build -p ws-client");
            }
            bin
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_snapshot_and_each_change_as_json_lines() {
    use tokio::io::AsyncBufReadExt;
    let app = spawn_app().await;
    let sale = app.create_sale(json!({"total": 4})).await;
    let mut child = tokio::process::Command::new(ws_client())
        .args(["watch", "--json", "--server", &app.address, "--sale", &sale])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("ws-client printed a line")
            .unwrap()
            .expect("ws-client is running");
        serde_json::from_str(&line).unwrap()
    };
    let snapshot = next().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(app.reserve(&sale, "w", 2).await.status(), 201);
    let stock = next().await;
    assert_eq!(stock["type"], "stock");
    assert_eq!(
        stock["seq"].as_i64(),
        snapshot["seq"].as_i64().map(|s| s + 1)
    );
    assert_eq!(stock["available"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_opens_every_watcher_and_reports_latency() {
    let app = spawn_app().await;
    let sale = app
        .create_sale(json!({"total": 1000, "per_user_limit": 1}))
        .await;
    let (bin, server) = (ws_client(), app.address.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["load", "--server", &server, "--sale", &sale])
            .args(["--connections", "200", "--duration", "2s", "--drive", "20"])
            .env("FLASHDROP_JWT_SECRET", JWT_SECRET)
            .args(["--server-pid", &std::process::id().to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("watchers connected  200 of 200"),
        "{stdout}"
    );
    assert!(stdout.contains("change-to-client    p50"), "{stdout}");
    assert!(stdout.contains("KiB per connection"), "{stdout}");
}

/// The floor under a live frame: every frame written reaches its reader
/// (the command fails otherwise), one per connection per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_floor_writes_a_frame_per_connection_per_round_and_all_arrive() {
    let bin = ws_client();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["send-floor", "--connections", "40", "--rate", "20"])
            .args(["--bytes", "150", "--duration", "500ms", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send-floor failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = report["frames"].as_u64().unwrap();
    assert!(frames >= 40 && frames.is_multiple_of(40), "{report}");
    assert!(
        report["cpu_us_per_frame"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
}
