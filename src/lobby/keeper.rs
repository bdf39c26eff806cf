//! The lobby keeper: a background loop in every instance that lets buyers
//! in at each open lobby's rate and lapses admissions not used in time.
//! Several instances may tick the same lobby: `lobby_tick.lua` keeps the
//! credit of turns in Redis, so together they admit at the rate. It needs
//! Redis only to admit; the admissions and lapses it hands out are recorded
//! in MongoDB off the loop, so a stalled MongoDB slows no one's turn.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bson::DateTime;
use futures_util::{StreamExt, stream};
use tokio_util::sync::CancellationToken;

use crate::{
    ids::SaleId,
    recovery::Recovery,
    sales::Sales,
    store::{Store, scripts::LobbyTickReply},
};

/// How often each lobby is ticked: the admission rate's granularity.
const TICK: Duration = Duration::from_millis(100);
/// How often the list of open lobbies is read from MongoDB.
const REFRESH: Duration = Duration::from_secs(2);
/// Most buyers one tick admits (and most admissions it lapses).
const MOST_PER_TICK: usize = 2_000;
/// Lobbies ticked at once.
const AT_ONCE: usize = 16;

pub struct Keeper {
    pub store: Store,
    pub sales: Sales,
    pub recovery: Recovery,
}

impl Keeper {
    pub async fn run(self, shutdown: CancellationToken) {
        let lobbies: Arc<Mutex<Vec<SaleId>>> = Arc::default();
        tokio::spawn(refresh(
            self.sales.clone(),
            lobbies.clone(),
            shutdown.clone(),
        ));
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let sales = lobbies.lock().expect("lobby list").clone();
            let this = &self;
            stream::iter(sales)
                .for_each_concurrent(AT_ONCE, |sale| async move {
                    if let Err(err) = this.tick(&sale).await {
                        tracing::warn!(sale_id = %sale, error = %err, "lobby tick failed");
                    }
                })
                .await;
        }
    }

    async fn tick(&self, sale: &SaleId) -> Result<(), crate::error::ApiError> {
        let reply = self
            .recovery
            .with_sale(sale, || self.store.redis.lobby_tick(sale, MOST_PER_TICK))
            .await?;
        let LobbyTickReply::Ok {
            admitted,
            lapsed,
            deadline,
            now,
        } = reply
        else {
            return Ok(());
        };
        if admitted.is_empty() && lapsed.is_empty() {
            return Ok(());
        }
        metrics::counter!("flashdrop_lobby_admitted_total").increment(admitted.len() as u64);
        metrics::counter!("flashdrop_lobby_lapsed_total").increment(lapsed.len() as u64);
        tracing::debug!(sale_id = %sale, admitted = admitted.len(), lapsed = lapsed.len(), "lobby ticked");
        let (store, sale) = (self.store.clone(), sale.clone());
        tokio::spawn(async move {
            let mongo = &store.mongo;
            let recorded = async {
                if !admitted.is_empty() {
                    mongo
                        .record_admissions(
                            &sale,
                            &admitted,
                            DateTime::from_millis(now),
                            DateTime::from_millis(deadline),
                        )
                        .await?;
                }
                if !lapsed.is_empty() {
                    mongo.record_lapses(&sale, &lapsed).await?;
                }
                Ok::<_, crate::store::StoreError>(())
            };
            // Unrecorded, an admission is given again after a rebuild: the
            // buyer keeps their place either way.
            if let Err(err) = recorded.await {
                tracing::warn!(sale_id = %sale, error = %err, "could not record lobby admissions");
            }
        });
        Ok(())
    }
}

/// Keeps the list of lobbies that are open (or open within a refresh) and
/// not over: ticked until the last admission given before the end can have
/// lapsed. When MongoDB cannot answer, the last list stays.
async fn refresh(sales: Sales, lobbies: Arc<Mutex<Vec<SaleId>>>, shutdown: CancellationToken) {
    loop {
        match sales.recent().await {
            Ok(docs) => {
                let now = DateTime::now().timestamp_millis();
                let refresh = REFRESH.as_millis() as i64;
                let open: Vec<SaleId> = docs
                    .iter()
                    .filter(|d| {
                        d.lobby.as_ref().is_some_and(|l| {
                            l.opens_at.timestamp_millis() <= now + refresh
                                && d.ends_at.timestamp_millis()
                                    + l.admission_seconds * 1000
                                    + refresh
                                    > now
                        })
                    })
                    .filter_map(|d| SaleId::parse(&d.id).ok())
                    .collect();
                *lobbies.lock().expect("lobby list") = open;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list lobbies; ticking the last known ones")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}
