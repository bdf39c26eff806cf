//! Watch mode: print events, reconnect with backoff, resync on a seq gap.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

use crate::Target;

pub async fn run(target: Target, token: Option<String>, json: bool) -> anyhow::Result<()> {
    let url = target.live_url(token.as_deref());
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect_async(&url).await {
            Ok((mut socket, _)) => {
                backoff = Duration::from_millis(200);
                let mut last_seq: Option<i64> = None;
                while let Some(msg) = socket.next().await {
                    let Ok(Message::Text(text)) = msg else {
                        if let Ok(Message::Close(Some(close))) = &msg
                            && close.code == CloseCode::Restart
                        {
                            eprintln!("(the server is restarting)");
                        }
                        if msg.is_err() {
                            break;
                        }
                        continue;
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    print_frame(&frame, json);
                    match frame["type"].as_str() {
                        Some("snapshot") => last_seq = frame["seq"].as_i64(),
                        Some("stock") => {
                            let seq = frame["seq"].as_i64();
                            if let (Some(last), Some(seq)) = (last_seq, seq)
                                && seq > last + 1
                            {
                                // Changes were missed (this client was slow):
                                // the stock frame is already the newest state,
                                // so carry on from it.
                                eprintln!("(skipped {} changes)", seq - last - 1);
                            }
                            last_seq = seq.max(last_seq);
                        }
                        _ => {}
                    }
                }
                eprintln!("(connection lost; reconnecting for a fresh snapshot)");
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp))
                if resp.status().is_client_error() =>
            {
                anyhow::bail!("the server refused the feed: {}", resp.status());
            }
            Err(err) => eprintln!("(cannot connect: {err}; retrying in {backoff:?})"),
        }
        // Jittered, so the watchers of a restarting instance do not all
        // come back in the same millisecond.
        tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..1.5))).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn print_frame(frame: &Value, json: bool) {
    if json {
        println!("{frame}");
        return;
    }
    let now = chrono::Local::now().format("%H:%M:%S%.3f");
    let s = |k: &str| frame[k].to_string().trim_matches('"').to_owned();
    match frame["type"].as_str().unwrap_or("?") {
        "snapshot" => {
            let sale = &frame["sale"];
            println!(
                "{now} seq {:<6} snapshot {} [{}] total {} available {} held {} sold {} waitlist {}",
                s("seq"),
                sale["name"],
                sale["status"].as_str().unwrap_or("?"),
                sale["total"],
                sale["available"],
                sale["held"],
                sale["sold"],
                sale["waitlist_length"],
            );
        }
        "stock" => println!(
            "{now} seq {:<6} stock    available {} held {} sold {} [{}] waitlist {}",
            s("seq"),
            s("available"),
            s("held"),
            s("sold"),
            s("status"),
            s("waitlist_length"),
        ),
        "promoted" => println!(
            "{now} you were promoted: hold {} of {} units until {}",
            s("reservation_id"),
            s("quantity"),
            s("expires_at")
        ),
        "reservation" => println!("{now} your hold {} is {}", s("reservation_id"), s("status")),
        "waitlist" => match frame["position"].as_i64() {
            Some(p) => println!("{now} waiting list: you are number {p}"),
            None => println!("{now} waiting list: {}", s("status")),
        },
        "sale_closed" => println!("{now} the sale is closed"),
        other => println!("{now} {other}: {frame}"),
    }
}
