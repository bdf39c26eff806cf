//! The `flashdrop` binary's commands.

use std::process::Command;

use flashdrop::{
    auth::{JwtKeys, Role},
    config::Secret,
};

use crate::helpers::JWT_SECRET;

fn flashdrop() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashdrop"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap());
    cmd
}

/// `flashdrop` against the shared test servers, with a database of its own.
fn flashdrop_on_servers() -> Command {
    let servers = crate::helpers::servers();
    let mut cmd = flashdrop();
    cmd.env("FLASHDROP_JWT_SECRET", JWT_SECRET)
        .env("FLASHDROP_REDIS_URL", &servers.redis_url)
        .env(
            "FLASHDROP_REDIS_CLUSTER",
            servers.redis_url.contains(',').to_string(),
        )
        .env("FLASHDROP_MONGODB_URI", &servers.mongo_uri)
        .env("FLASHDROP_MONGODB_DB", crate::helpers::unique_db());
    cmd
}

#[test]
fn token_prints_a_verifiable_jwt_on_its_last_line() {
    let out = flashdrop()
        .env("FLASHDROP_JWT_SECRET", JWT_SECRET)
        .args(["token", "--sub", "alice", "--role", "admin", "--ttl", "2h"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    let claims = JwtKeys::new(&Secret::new(JWT_SECRET))
        .verify(token)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.role, Role::Admin);
    let ttl = claims.exp as i64 - chrono::Utc::now().timestamp();
    assert!((7100..=7200).contains(&ttl), "ttl {ttl}");
}

#[test]
fn a_missing_secret_stops_with_the_variable_named() {
    for args in [&["token", "--sub", "a"][..], &["serve"][..]] {
        let out = flashdrop().args(args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("FLASHDROP_JWT_SECRET"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_value_naming_it() {
    let out = flashdrop()
        .env("FLASHDROP_JWT_SECRET", JWT_SECRET)
        .env("FLASHDROP_RATE_LIMIT_IP", "lots")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("FLASHDROP_RATE_LIMIT_IP"), "{stderr}");
}

#[test]
fn openapi_prints_the_spec() {
    let out = flashdrop().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["info"]["title"], "Flashdrop");
}

/// Also: `FLASHDROP_WORKER_THREADS` sizes the runtime, as its start-up
/// line says.
#[test]
fn serve_shuts_down_gracefully_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = flashdrop_on_servers()
        .env("FLASHDROP_WORKER_THREADS", "3")
        .env("FLASHDROP_LOG_FORMAT", "json")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes, so a full pipe never blocks the server.
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
        log
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let log = log.join().unwrap();
    assert!(!log.contains("panicked"), "{log}");
    let listening = log.lines().find(|l| l.contains("flashdrop listening"));
    let listening = listening.unwrap_or_else(|| panic!("no start-up line: {log}"));
    let listening: serde_json::Value = serde_json::from_str(listening).unwrap();
    assert_eq!(listening["workers"], 3, "{listening}");
}

/// The MongoDB driver ends its sessions in a task it spawns when the last
/// handle of a client drops; a process that lets the runtime stop first
/// printed that task's panic (`connection_requester.rs`, `SendError`) on
/// one or two exits in a hundred. Each command shuts its client down before
/// it returns, so no exit prints one.
#[test]
fn audit_exits_without_a_panic_from_the_mongodb_driver() {
    let sale = flashdrop::ids::SaleId::new().to_string();
    let runs = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 400 {
                    let out = flashdrop_on_servers()
                        .args(["audit", &sale])
                        .output()
                        .unwrap();
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    assert!(out.status.success(), "{stderr}");
                    assert!(!stderr.contains("panicked"), "{stderr}");
                }
            });
        }
    });
}
