//! `send-floor`: what the kernel alone costs to send one small frame to
//! each of N loopback TCP connections, the floor under the server's CPU per
//! delivered live frame. A plain thread writes the same bytes a stock frame
//! takes (WebSocket header included) with one blocking `write` per
//! connection per round, at the same rate of rounds as `load --drive`; the
//! other ends are read by another process (this one, with `--read-from`),
//! a task per connection waiting in epoll, as a watcher's is. Over
//! loopback the sender also pays the receiving side's TCP work and the
//! reader's wake-up, as the server does in `load`; its thread's CPU time
//! (from /proc) divided by the frames sent is the floor.

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use tokio::io::AsyncReadExt;

#[derive(clap::Args)]
pub struct FloorArgs {
    /// Connections, each sent one frame per round.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rounds per second (a round writes one frame to every connection).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Bytes per frame: about a stock frame with its 2-byte header.
    #[arg(long, default_value_t = 150)]
    bytes: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// CPUs for the reading process (a `taskset -c` list), as the bench
    /// pins its load client; this process keeps its own.
    #[arg(long)]
    reader_cpus: Option<String>,
    /// The reading side: connect to this address, read until every
    /// connection ends and print the bytes read.
    #[arg(long, hide = true)]
    read_from: Option<std::net::SocketAddr>,
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    crate::cpu::seconds_in("/proc/thread-self/stat")
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/thread-self/stat"))
}

/// Connects `connections` times, reads every connection to its end and
/// prints the bytes read.
async fn read_all(addr: std::net::SocketAddr, connections: usize) -> anyhow::Result<()> {
    let mut readers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut reader = tokio::net::TcpStream::connect(addr).await?;
        readers.push(tokio::spawn(async move {
            let (mut buf, mut read) = ([0u8; 1024], 0u64);
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                read += n as u64;
            }
            read
        }));
    }
    let mut received = 0;
    for reader in readers {
        received += reader.await?;
    }
    println!("{received}");
    Ok(())
}

pub async fn run(args: FloorArgs) -> anyhow::Result<()> {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    if let Some(addr) = args.read_from {
        return read_all(addr, args.connections).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut reader = match &args.reader_cpus {
        Some(cpus) => {
            let mut pinned = tokio::process::Command::new("taskset");
            pinned.args(["-c", cpus]).arg(&exe);
            pinned
        }
        None => tokio::process::Command::new(&exe),
    };
    let reader = reader
        .args(["send-floor", "--connections", &args.connections.to_string()])
        .args(["--read-from", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let connections = args.connections;
    let mut senders = tokio::task::spawn_blocking(move || {
        (0..connections)
            .map(|_| {
                let (sender, _) = listener.accept()?;
                sender.set_nodelay(true)?;
                Ok(sender)
            })
            .collect::<std::io::Result<Vec<TcpStream>>>()
    })
    .await??;
    let frame = vec![b'x'; args.bytes];
    let (rate, duration) = (args.rate.max(1), args.duration);
    // One blocking-pool thread does every write, so its own CPU time is
    // the writes'.
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, f64, Duration)> {
        let cpu_before = thread_cpu_seconds()?;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut slowest = Duration::ZERO;
        let mut round = 0u32;
        while started.elapsed() < duration {
            let began = Instant::now();
            for sender in &mut senders {
                sender.write_all(&frame)?;
                sent += 1;
            }
            slowest = slowest.max(began.elapsed());
            round += 1;
            let next = started + Duration::from_secs_f64(f64::from(round) / f64::from(rate));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let cpu = thread_cpu_seconds()? - cpu_before;
        drop(senders);
        Ok((sent, cpu, slowest))
    });
    let (sent, cpu, slowest) = writer.await??;
    // The writer closed every connection: the reader prints what it got,
    // which must be every byte sent, or the floor measured a broken path.
    let output = reader.wait_with_output().await?;
    let got: u64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    let expected = sent * args.bytes as u64;
    anyhow::ensure!(got == expected, "the reader got {got} bytes of {expected}");
    let per_frame_us = cpu * 1e6 / sent.max(1) as f64;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "what": "send floor", "connections": args.connections, "rate": rate,
                "bytes": args.bytes, "frames": sent, "cpu_us_per_frame": per_frame_us,
                "slowest_round_ms": slowest.as_secs_f64() * 1e3,
            })
        );
    } else {
        println!(
            "send floor   {per_frame_us:.1} µs of CPU per frame  ({sent} frames of {} bytes to {} connections, slowest round {:.0} ms)",
            args.bytes,
            args.connections,
            slowest.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
