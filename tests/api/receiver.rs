//! A webhook receiver for tests: a real HTTP server that checks every
//! signature on its own (its own HMAC over `id.timestamp.body`, not the
//! server's signing code), records every request, and can fail the first
//! attempts, answer slowly, refuse, or go away and come back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use poem::{
    EndpointExt, Request, Response, Route, Server, handler,
    http::StatusCode,
    listener::{Listener, TcpListener},
    web::Data,
};
use serde_json::Value;
use sha2::Sha256;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    /// The signature checked out against the secret, in time.
    pub verified: bool,
    /// What the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }
    pub fn sale(&self) -> &str {
        self.json["data"]["sale_id"].as_str().unwrap_or("")
    }
    pub fn sequence(&self) -> i64 {
        self.json["data"]["sequence"].as_i64().unwrap_or(-1)
    }
}

/// How the receiver answers the `n`th attempt (from 1) at a message.
pub type Behaviour = dyn Fn(&Value, u32) -> (u16, Duration) + Send + Sync;

pub struct Shared {
    pub secret: Mutex<String>,
    pub received: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<String, u32>>,
    behaviour: Mutex<Arc<Behaviour>>,
    /// Signalled on every request.
    pub arrived: tokio::sync::Notify,
}

pub struct Receiver {
    pub port: u16,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The receiver's own check of a Standard Webhooks signature.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let Ok(key) = STANDARD.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

#[handler]
async fn receive(req: &Request, body: String, shared: Data<&Arc<Shared>>) -> Response {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let id = header("webhook-id");
    let (timestamp, signature) = (header("webhook-timestamp"), header("webhook-signature"));
    let secret = shared.secret.lock().unwrap().clone();
    let verified = verify(&secret, &id, &timestamp, &body, &signature);
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let at = std::time::Instant::now();
    let attempt = {
        let mut attempts = shared.attempts.lock().unwrap();
        let n = attempts.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let (status, delay) = behaviour(&json, attempt);
    shared.arrived.notify_waiters();
    tokio::time::sleep(delay).await;
    shared.received.lock().unwrap().push(Received {
        id,
        timestamp,
        signature,
        body,
        json,
        verified,
        answered: status,
        at,
    });
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .finish()
}

impl Receiver {
    /// A receiver answering 200 at once until told otherwise.
    pub async fn start() -> Self {
        Self::start_on(crate::helpers::free_port(), None).await
    }

    async fn start_on(port: u16, shared: Option<Arc<Shared>>) -> Self {
        let shared = shared.unwrap_or_else(|| {
            Arc::new(Shared {
                secret: Mutex::new(String::new()),
                received: Mutex::default(),
                attempts: Mutex::default(),
                behaviour: Mutex::new(Arc::new(|_, _| (200, Duration::ZERO))),
                arrived: tokio::sync::Notify::new(),
            })
        });
        let acceptor = TcpListener::bind(format!("127.0.0.1:{port}"))
            .into_acceptor()
            .await
            .expect("the receiver's port is free");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Route::new().at("/hook", receive).data(shared.clone());
        tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    app,
                    async {
                        let _ = stopped.await;
                    },
                    Some(Duration::from_millis(100)),
                )
                .await;
        });
        Self {
            port,
            shared,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn set_secret(&self, secret: &str) {
        *self.shared.secret.lock().unwrap() = secret.to_owned();
    }

    pub fn behave(&self, f: impl Fn(&Value, u32) -> (u16, Duration) + Send + Sync + 'static) {
        *self.shared.behaviour.lock().unwrap() = Arc::new(f);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Goes away: the port stops answering.
    pub async fn go_away(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        crate::helpers::eventually(Duration::from_secs(5), || async {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        })
        .await
        .expect("the receiver went away");
    }

    /// Comes back on the same port, remembering what it had.
    pub async fn come_back(&mut self) {
        let back = Self::start_on(self.port, Some(self.shared.clone())).await;
        self.stop = back.stop;
    }
}

/// The messages a receiver accepted (2xx), once each, in the order of
/// their first acceptance.
pub fn accepted(received: &[Received]) -> Vec<Received> {
    let mut seen = std::collections::HashSet::new();
    received
        .iter()
        .filter(|r| (200..300).contains(&r.answered) && seen.insert(r.id.clone()))
        .cloned()
        .collect()
}
