//! The `flashdrop` binary: serve the API, mint a token, or print the spec.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flashdrop::{
    audit,
    auth::{JwtKeys, Role},
    clock::LocalClock,
    config::{Secret, Settings},
    ids::SaleId,
    startup::Application,
    store::{Mongo, Redis, Store, scripts::reserve_benchmark},
    telemetry,
};

/// Every request allocates small, short-lived buffers across threads;
/// glibc's allocator spent a quarter of the server's CPU on them. jemalloc
/// hands a thread back the blocks it freed last, still in the cache; in
/// one set of fixed-rate k6 runs flashdrop spent about 5 % less CPU per
/// purchase than with mimalloc (README, "The release build").
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long a command waits for MongoDB to end its sessions as it exits.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    version,
    about = "Flash-sale backend: holds in Redis, orders in MongoDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (configuration from FLASHDROP_* variables).
    Serve {
        /// Address to listen on; overrides FLASHDROP_LISTEN.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print a signed JWT (last line of stdout), using FLASHDROP_JWT_SECRET.
    Token {
        /// The buyer or admin id (`sub` claim).
        #[arg(long)]
        sub: String,
        #[arg(long, value_enum, default_value = "buyer")]
        role: CliRole,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Check one sale's invariants across Redis and MongoDB (configuration
    /// from FLASHDROP_* variables); one line per invariant, exit status 1
    /// when one fails.
    Audit {
        /// The sale to audit.
        sale: String,
        /// A file of reservation ids that were answered 201 (one per line):
        /// each must be an order.
        #[arg(long)]
        confirmed: Option<std::path::PathBuf>,
    },
    /// Print the reserve script's source (`--source`), or the `EVALSHA`
    /// arguments of one reserve with redis-benchmark's `__rand_int__`
    /// placeholders, one per line (used by scripts/bench).
    #[command(hide = true)]
    BenchReserve {
        #[arg(long, required_unless_present = "source")]
        sale: Option<String>,
        #[arg(long)]
        source: bool,
        /// Reserves per call, as a batch of the server sends them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=25))]
        batch: u16,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliRole {
    Buyer,
    Admin,
}

/// Turns transparent huge pages off for this process, as Redis and MongoDB
/// ask for theirs. The allocator hands memory back and takes it again in
/// pieces of tens of kilobytes; with huge pages each fault in such a piece
/// zeroes 2 MB (README, "Where the CPU goes"). False where the kernel
/// refused (not Linux, or a kernel without the switch): nothing else
/// changes.
fn no_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and changes no
        // memory of ours; it sets a flag the kernel reads at page faults.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

fn main() -> anyhow::Result<()> {
    let small_pages = no_transparent_huge_pages();
    let command = Cli::parse().command;
    // The server's settings are read before its runtime is built: they
    // size it.
    let settings = match &command {
        Command::Serve { .. } => Some(Settings::from_env()?),
        _ => None,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = settings.as_ref().and_then(|s| s.worker_threads) {
        runtime.worker_threads(threads);
    }
    runtime
        .build()?
        .block_on(run(command, settings, small_pages))
}

async fn run(
    command: Command,
    settings: Option<Settings>,
    small_pages: bool,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen } => {
            let Some(mut settings) = settings else {
                unreachable!("main reads the server's settings before its runtime starts")
            };
            if let Some(listen) = listen {
                settings.listen = listen;
            }
            telemetry::init(&settings.log, settings.log_format);
            if !small_pages {
                tracing::info!("transparent huge pages stay as the system sets them");
            }
            let app = Application::build(settings).await?;
            let mongo = app.state().store.mongo.clone();
            let served = app.run_until_stopped().await;
            mongo.shutdown(CLOSE_WITHIN).await;
            served?;
        }
        Command::Token { sub, role, ttl } => {
            let secret = std::env::var("FLASHDROP_JWT_SECRET").context(
                "FLASHDROP_JWT_SECRET: is required (the secret the server signs with; \
                     for the demo of scripts/run, `scripts/token <name> [admin]` reads it)",
            )?;
            if secret.len() < 32 {
                anyhow::bail!("FLASHDROP_JWT_SECRET: must be at least 32 bytes");
            }
            let role = match role {
                CliRole::Buyer => Role::Buyer,
                CliRole::Admin => Role::Admin,
            };
            let token = JwtKeys::new(&Secret::new(secret)).mint(&sub, role, ttl)?;
            println!("{token}");
        }
        Command::Openapi => println!("{}", flashdrop::api::spec_json()),
        Command::Audit { sale, confirmed } => {
            let settings = Settings::from_env()?;
            let sale = SaleId::parse(&sale)?;
            let confirmed = match confirmed {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .lines()
                    .map(str::to_owned)
                    .filter(|l| !l.is_empty())
                    .collect(),
                None => Vec::new(),
            };
            let store = Store {
                redis: Redis::for_settings(&settings).await?,
                mongo: Mongo::connect(settings.mongodb_uri.expose(), &settings.mongodb_db).await?,
                clock: LocalClock::default(),
            };
            let checks = async {
                let now = store.redis.now_ms().await?;
                audit::audit(&store, &sale, &confirmed, now).await
            }
            .await;
            store.mongo.shutdown(CLOSE_WITHIN).await;
            let checks = checks?;
            for check in &checks {
                println!("{check}");
            }
            if checks.iter().any(|c| !c.ok) {
                std::process::exit(1);
            }
        }
        Command::BenchReserve {
            sale,
            source,
            batch,
        } => {
            let sale = SaleId::parse(sale.as_deref().unwrap_or("000000000000000000000000"))?;
            let rid = format!("{sale}-__rand_int____rand_int__");
            let (script, argv) =
                reserve_benchmark(&sale, &rid, "bench-__rand_int__", usize::from(batch));
            if source {
                print!("{script}");
            } else {
                println!("{}", argv.join("\n"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_turns_transparent_huge_pages_off() {
        let status = || std::fs::read_to_string("/proc/self/status").unwrap();
        let enabled = |s: String| {
            s.lines()
                .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_owned()))
        };
        assert_eq!(enabled(status()).as_deref(), Some("1"), "on before");
        assert!(super::no_transparent_huge_pages());
        assert_eq!(enabled(status()).as_deref(), Some("0"), "off after");
    }
}
