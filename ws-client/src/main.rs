//! `ws-client`: watch a sale's live feed from a terminal, load the feed
//! with thousands of watchers and measure how fast changes reach them, or
//! drive purchases and status reads over HTTP and measure them.

// A load client keeps its own time: the server's rule that only the Redis
// clock decides does not apply here.
#![allow(clippy::disallowed_methods)]

mod buy;
mod ceiling;
mod cpu;
mod floor;
mod launch;
mod load;
mod mix;
mod pay;
mod watch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct Target {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "FLASHDROP_URL")]
    server: String,
    /// The sale to watch.
    #[arg(long)]
    sale: String,
}

impl Target {
    /// The live feed's WebSocket URL, with an optional token.
    pub fn live_url(&self, token: Option<&str>) -> String {
        let base = self
            .server
            .trim_end_matches('/')
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut url = format!("{base}/api/v1/sales/{}/live", self.sale);
        if let Some(token) = token {
            url.push_str("?access_token=");
            url.push_str(token);
        }
        url
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print every event of a sale as it comes; reconnects and resyncs on
    /// its own.
    Watch {
        #[command(flatten)]
        target: Target,
        /// A buyer token, for personal events (promoted, reservation, ...).
        #[arg(long, env = "FLASHDROP_TOKEN")]
        token: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Open many connections, count frames and report connect time and
    /// change-to-client latency.
    Load(load::LoadArgs),
    /// Drive purchases (reserve then confirm, a fresh buyer each) with N
    /// concurrent buyers; report purchases/s and latency percentiles.
    Buy(buy::BuyArgs),
    /// Drive `GET /sales/{id}` with N concurrent readers.
    Status(buy::HttpLoadArgs),
    /// Write order documents with bare `insert_many` calls: the MongoDB
    /// ceiling the server's orders per second are measured against.
    InsertCeiling(ceiling::CeilingArgs),
    /// Send one small frame per round to each of N loopback TCP
    /// connections from a plain thread: the kernel's CPU per frame, the
    /// floor under the server's per delivered live frame.
    SendFloor(floor::FloorArgs),
    /// Buyers who reserve, confirm, cancel, walk away and wait in line,
    /// spread over several servers; writes the confirmed reservation ids.
    Mix(mix::MixArgs),
    /// A lobby sale's start at launch scale: buyers join, readers read the
    /// draw at the start, buyers ask for their turns and buy when let in.
    Launch(launch::LaunchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Watch {
            target,
            token,
            json,
        } => watch::run(target, token, json).await,
        Command::Load(args) => load::run(args).await,
        Command::Buy(args) => buy::buy(args).await,
        Command::Status(args) => buy::status(args).await,
        Command::InsertCeiling(args) => ceiling::run(args).await,
        Command::SendFloor(args) => floor::run(args).await,
        Command::Mix(args) => mix::run(args).await,
        Command::Launch(args) => launch::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    fn target(server: &str) -> Target {
        Target {
            server: server.into(),
            sale: "abc".into(),
        }
    }

    #[test]
    fn the_feed_url_follows_the_server_scheme_and_carries_the_token() {
        assert_eq!(
            target("http://127.0.0.1:8080/").live_url(None),
            "ws://127.0.0.1:8080/api/v1/sales/abc/live"
        );
        assert_eq!(
            target("https://drop.example").live_url(Some("t0k")),
            "wss://drop.example/api/v1/sales/abc/live?access_token=t0k"
        );
    }
}
