//! The lobby keeper: a background loop in every instance that ticks each
//! lobby about ten times a second (`lua/lobby_tick.lua`, on the Redis
//! clock): at the start it makes the draw when the tick hands it the lease,
//! then it lets buyers in at the lobby's rate and lapses admissions not
//! used in time. Several instances may tick the same lobby: the script
//! keeps the credit of turns and the draw's lease in Redis, so together
//! they admit at the rate and one makes the draw. It needs Redis only to
//! admit; what it hands out is logged by the script itself and recorded in
//! MongoDB by the recorder.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::{
    ids::SaleId,
    lobby::Lobby,
    recovery::Recovery,
    sales::Sales,
    store::{Store, scripts::LobbyTickReply},
};

/// How often each lobby is ticked: the admission rate's granularity.
const TICK: Duration = Duration::from_millis(100);
/// How often the list of lobbies is read from MongoDB.
const REFRESH: Duration = Duration::from_secs(2);
/// Most buyers one tick call admits (and most admissions it lapses); a
/// tick calls again while there is more, so a call stays short.
pub const MOST_PER_CALL: usize = 100;
/// Calls one tick makes at most for one lobby: one instance admits up to
/// 50,000 buyers a second.
const CALLS_PER_TICK: usize = 50;
/// How long the draw's lease lasts: making and loading a draw of 100,000
/// buyers takes a few seconds.
const DRAW_LEASE: Duration = Duration::from_secs(30);
/// Lobbies ticked at once.
const AT_ONCE: usize = 16;

/// The lobbies this instance knows of: those to tick (open, or opening,
/// and not over) and every lobby whose log may still hold records.
#[derive(Clone, Default)]
pub struct Lobbies(Arc<parking_lot::Mutex<Known>>);

#[derive(Default)]
struct Known {
    ticking: Vec<SaleId>,
    recording: Vec<SaleId>,
}

impl Lobbies {
    pub fn ticking(&self) -> Vec<SaleId> {
        self.0.lock().ticking.clone()
    }

    pub fn recording(&self) -> Vec<SaleId> {
        self.0.lock().recording.clone()
    }
}

pub struct Keeper {
    pub store: Store,
    pub sales: Sales,
    pub lobby: Lobby,
    pub recovery: Recovery,
    pub lobbies: Lobbies,
}

impl Keeper {
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::spawn(refresh(
            self.sales.clone(),
            self.store.clone(),
            self.lobbies.clone(),
            shutdown.clone(),
        ));
        let drawing: Arc<parking_lot::Mutex<HashSet<SaleId>>> = Arc::default();
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let this = &self;
            let drawing = &drawing;
            stream::iter(self.lobbies.ticking())
                .for_each_concurrent(AT_ONCE, |sale| async move {
                    if let Err(err) = this.tick(&sale, drawing).await {
                        tracing::warn!(sale_id = %sale, error = %err, "lobby tick failed");
                    }
                })
                .await;
        }
    }

    async fn tick(
        &self,
        sale: &SaleId,
        drawing: &Arc<parking_lot::Mutex<HashSet<SaleId>>>,
    ) -> Result<(), crate::error::ApiError> {
        for _ in 0..CALLS_PER_TICK {
            let token = SaleId::new().to_string();
            let reply = self
                .recovery
                .with_sale(sale, || {
                    self.store
                        .redis
                        .lobby_tick(sale, MOST_PER_CALL, &token, DRAW_LEASE)
                })
                .await?;
            match reply {
                LobbyTickReply::Draw { token } => {
                    // Made off the tick loop: other lobbies keep ticking.
                    if drawing.lock().insert(sale.clone()) {
                        let (lobby, sale, drawing) =
                            (self.lobby.clone(), sale.clone(), drawing.clone());
                        tokio::spawn(async move {
                            if let Err(err) = lobby.freeze(&sale, &token).await {
                                tracing::error!(sale_id = %sale, error = %err, "could not make the draw; another tick tries again when the lease ends");
                            }
                            drawing.lock().remove(&sale);
                        });
                    }
                    return Ok(());
                }
                LobbyTickReply::Ok {
                    admitted,
                    lapsed,
                    more,
                    ..
                } => {
                    if !admitted.is_empty() || !lapsed.is_empty() {
                        metrics::counter!("flashdrop_lobby_admitted_total")
                            .increment(admitted.len() as u64);
                        metrics::counter!("flashdrop_lobby_lapsed_total")
                            .increment(lapsed.len() as u64);
                        tracing::debug!(sale_id = %sale, admitted = admitted.len(), lapsed = lapsed.len(), "lobby ticked");
                    }
                    if !more {
                        return Ok(());
                    }
                }
                LobbyTickReply::None | LobbyTickReply::Missing => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Keeps the list of lobbies: every lobby sale not over is ticked (until
/// the last admission given before the end can have lapsed), and every
/// recent one recorded. Over is judged on the Redis clock. When MongoDB
/// or Redis cannot answer, the last list stays.
async fn refresh(sales: Sales, store: Store, lobbies: Lobbies, shutdown: CancellationToken) {
    loop {
        match (sales.recent().await, store.redis.now_ms().await) {
            (Ok(docs), Ok(now)) => {
                let margin = REFRESH.as_millis() as i64;
                let mut known = Known::default();
                for doc in &docs {
                    let (Some(lobby), Ok(sale)) = (&doc.lobby, SaleId::parse(&doc.id)) else {
                        continue;
                    };
                    let last_lapse =
                        doc.ends_at.timestamp_millis() + lobby.admission_seconds * 1000 + margin;
                    if last_lapse > now {
                        known.ticking.push(sale.clone());
                    }
                    known.recording.push(sale);
                }
                *lobbies.0.lock() = known;
            }
            (Err(err), _) => {
                tracing::warn!(error = %err, "cannot list lobbies; ticking the last known ones")
            }
            (_, Err(err)) => {
                tracing::warn!(error = %err, "cannot read the Redis clock; ticking the last known lobbies")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}
