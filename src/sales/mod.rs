//! Sales: scheduling, changing and closing them (MongoDB and Redis), and
//! their live view, read from Redis in one atomic step.

pub mod rules;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bson::DateTime as BsonDateTime;
use chrono::Utc;
use futures_util::future::try_join_all;

use self::rules::{CreateSale, MAX_HOLD_SECONDS, PatchSale, SaleView, validate};
use crate::{
    config::Settings,
    error::{ApiError, ErrorCode},
    holds::script_batch::{ReadSale, ScriptBatches},
    ids::SaleId,
    lobby::seal::SeedKey,
    recovery::Recovery,
    store::{
        Store, StoreError,
        mongo::SaleDoc,
        scripts::{CloseReply, LiveSettings, ReadSaleReply, UpdateReply},
    },
};

/// How long the list of newest sales is taken as current (per instance).
const LISTING_FRESH: Duration = Duration::from_secs(1);
/// The most sales a list may ask for.
const LISTING_MAX: i64 = 200;

/// The ids of the newest sales, read from MongoDB at most once a second per
/// instance (and after this instance changes a sale); the counts come from
/// Redis on every read. One reader refreshes while the others wait for it.
#[derive(Clone, Default)]
struct Listing(Arc<tokio::sync::Mutex<Option<ListingRead>>>);

struct ListingRead {
    at: Instant,
    ids: Vec<SaleId>,
}

#[derive(Clone)]
pub struct Sales {
    store: Store,
    recovery: Recovery,
    listing: Listing,
    /// Seals a lobby's seed when its sale is created.
    seed_key: Option<SeedKey>,
    /// Whether the payment webhook has its secret: sales that take payment
    /// need it.
    payments: bool,
    /// Test fault point: a sale's change fails to reach MongoDB.
    fail_writes: bool,
    /// Status reads of a sale that wait together share one Redis read.
    reads: ScriptBatches<ReadSale>,
}

impl Sales {
    pub fn new(
        store: Store,
        recovery: Recovery,
        seed_key: Option<SeedKey>,
        settings: &Settings,
    ) -> Self {
        Self {
            reads: ScriptBatches::new(ReadSale {
                store: store.clone(),
            }),
            store,
            recovery,
            listing: Listing::default(),
            seed_key,
            payments: settings.payment_webhook_secret.is_some(),
            fail_writes: settings.fault_fail_sale_write,
        }
    }

    /// Now on the Redis clock, which decides every question of a sale's
    /// window (instances' own clocks may disagree by seconds).
    async fn now(&self) -> Result<chrono::DateTime<Utc>, ApiError> {
        let ms = self.store.redis.now_ms().await?;
        Ok(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default())
    }

    fn fault(&self) -> Result<(), ApiError> {
        match self.fail_writes {
            true => Err(ApiError::unavailable("fault point: sale write failed")),
            false => Ok(()),
        }
    }

    /// Sales that may still change: their window has not ended longer ago
    /// than the longest hold. The reaper and the event persister walk these.
    pub async fn recent(&self) -> Result<Vec<SaleDoc>, StoreError> {
        let horizon =
            BsonDateTime::from_millis(self.store.clock.now_ms() - (MAX_HOLD_SECONDS + 60) * 1000);
        self.store.mongo.sales_ending_after(horizon).await
    }

    pub async fn create(&self, spec: CreateSale) -> Result<SaleView, ApiError> {
        let now = self.now().await?;
        validate(&spec, now)?;
        if spec.payment == rules::PaymentMode::Webhook && !self.payments {
            return Err(ApiError::new(
                ErrorCode::NotConfigured,
                "this server has no FLASHDROP_PAYMENT_WEBHOOK_SECRET, which checks the payment provider's webhook: set it to create sales with payment \"webhook\"",
            ));
        }
        let id = SaleId::new();
        let doc = spec.into_doc(&id, now, self.seed_key.as_ref())?;
        self.store.mongo.insert_sale(&doc).await?;
        // A failure here is repaired by the first read, which opens the sale
        // from MongoDB.
        self.store
            .redis
            .open_sale(&id, &LiveSettings::from(&doc))
            .await?;
        tracing::info!(sale_id = %id, total = doc.total, "sale created");
        self.forget_listing().await;
        self.view(&id).await
    }

    /// The newest sales first, with live counts: no MongoDB read per
    /// request. With `after` (the last sale of the page before), the
    /// sales that follow it: from the newest sales this instance knows
    /// when it is among them, else from MongoDB.
    pub async fn list(&self, limit: i64, after: Option<&str>) -> Result<Vec<SaleView>, ApiError> {
        let take = usize::try_from(limit).unwrap_or(0);
        let ids = self.newest_ids().await?;
        let ids = match after {
            None => ids.into_iter().take(take).collect(),
            Some(after) => {
                let last = SaleId::parse(after).map_err(|_| Self::unknown_after(after))?;
                match ids.iter().position(|id| *id == last) {
                    // The listing holds every sale up to its size: past its
                    // end, MongoDB has the rest.
                    Some(i) if i + 1 + take <= ids.len() || ids.len() < LISTING_MAX as usize => {
                        ids.into_iter().skip(i + 1).take(take).collect()
                    }
                    _ => self.ids_after(&last, limit).await?,
                }
            }
        };
        try_join_all(ids.iter().map(|id| self.view(id))).await
    }

    async fn ids_after(&self, last: &SaleId, limit: i64) -> Result<Vec<SaleId>, ApiError> {
        let Some(doc) = self.store.mongo.find_sale(last).await? else {
            return Err(Self::unknown_after(last.as_str()));
        };
        Ok(ids_of(
            &self.store.mongo.list_sales_after(&doc, limit).await?,
        ))
    }

    /// As an id in a path that names no sale: 404.
    fn unknown_after(after: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "after: no sale {after:?} to list after; pass the id of the last sale of the page before"
            ),
        )
    }

    async fn newest_ids(&self) -> Result<Vec<SaleId>, ApiError> {
        let mut cached = self.listing.0.lock().await;
        if let Some(read) = &*cached
            && read.at.elapsed() < LISTING_FRESH
        {
            return Ok(read.ids.clone());
        }
        match self.store.mongo.list_sales(LISTING_MAX).await {
            Ok(docs) => {
                let ids = ids_of(&docs);
                *cached = Some(ListingRead {
                    at: Instant::now(),
                    ids: ids.clone(),
                });
                Ok(ids)
            }
            // MongoDB is away: the sales known a moment ago, with live
            // counts, beat a 503; try MongoDB again in a second.
            Err(err) => match cached.as_mut() {
                Some(read) => {
                    tracing::warn!(error = %err, "listing sales known before");
                    read.at = Instant::now();
                    Ok(read.ids.clone())
                }
                None => Err(err.into()),
            },
        }
    }

    /// After this instance changes a sale, its next list reads afresh.
    async fn forget_listing(&self) {
        *self.listing.0.lock().await = None;
    }

    pub async fn view(&self, sale: &SaleId) -> Result<SaleView, ApiError> {
        Ok(self.snapshot(sale).await?.0)
    }

    /// The sale's view with the `seq` of the last change it includes and
    /// the epoch of the Redis copy it was read from, read in one step so a
    /// live client can apply later changes on top.
    pub async fn snapshot(&self, sale: &SaleId) -> Result<(SaleView, i64, String), ApiError> {
        let read = self
            .recovery
            .with_sale(sale, || self.reads.run(sale.clone()))
            .await?;
        match read {
            ReadSaleReply::Sale(live) => {
                let (seq, epoch) = (live.seq, live.epoch.clone());
                Ok((SaleView::from_live(sale, live), seq, epoch))
            }
            ReadSaleReply::Missing => Err(ApiError::rebuilding()),
        }
    }

    /// Changes a sale: MongoDB first, only if the sale is still at the
    /// version the change was made from, then Redis, whose script is the
    /// atomic gate against the sale starting meanwhile (MongoDB then takes
    /// the change back).
    pub async fn patch(&self, sale: &SaleId, patch: PatchSale) -> Result<SaleView, ApiError> {
        let before = self.recovery.sale_doc(sale).await?;
        let now = self.now().await?;
        if before.closed_at.is_some() || before.ends_at.to_chrono() <= now {
            return Err(ApiError::new(ErrorCode::SaleEnded, "the sale has ended"));
        }
        let needs_upcoming = patch.needs_upcoming(&before);
        if needs_upcoming && before.starts_at.to_chrono() <= now {
            return Err(ApiError::new(
                ErrorCode::SaleStarted,
                "once a sale has started only name, ends_at and hold_seconds may change",
            ));
        }
        let lobby_open = before
            .lobby
            .as_ref()
            .is_some_and(|l| l.opens_at.to_chrono() <= now);
        let touches_lobby = patch.touches_lobby();
        if touches_lobby && (lobby_open || before.starts_at.to_chrono() <= now) {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                "the lobby's settings can change only before it opens",
            ));
        }
        let after = patch.apply(&before);
        validate(&after, now)?;
        // The one home of this rule: the version fence below makes
        // `before` the sale as it is when the change lands.
        if after.total < before.total {
            return Err(ApiError::new(
                ErrorCode::InvalidChange,
                "stock can only be raised",
            ));
        }
        let mut after =
            after.into_doc(sale, before.created_at.to_chrono(), self.seed_key.as_ref())?;
        after.version = before.version + 1;
        // The draw's seed is committed once: a patch keeps it.
        if let (Some(new), Some(old)) = (after.lobby.as_mut(), before.lobby.as_ref()) {
            new.seed.clone_from(&old.seed);
            new.seed_sealed.clone_from(&old.seed_sealed);
            new.seed_sha256.clone_from(&old.seed_sha256);
        }
        self.fault()?;
        if !self
            .store
            .mongo
            .replace_sale_if(&after, before.version)
            .await?
        {
            return Err(changed_meanwhile());
        }
        let refused = match self
            .store
            .redis
            .update_sale(
                sale,
                &LiveSettings::from(&after),
                needs_upcoming,
                touches_lobby,
            )
            .await?
        {
            // Not in Redis: the next read opens the sale from MongoDB.
            UpdateReply::Ok | UpdateReply::Missing | UpdateReply::Older => None,
            UpdateReply::Started => Some(ApiError::new(
                ErrorCode::SaleStarted,
                "the sale has started",
            )),
            UpdateReply::Ended => Some(ApiError::new(ErrorCode::SaleEnded, "the sale has ended")),
            UpdateReply::LobbyOpen => Some(ApiError::new(
                ErrorCode::InvalidChange,
                "the lobby's settings can change only before it opens",
            )),
        };
        if let Some(refused) = refused {
            let mut back = before;
            back.version = after.version + 1;
            self.store
                .mongo
                .replace_sale_if(&back, after.version)
                .await?;
            return Err(refused);
        }
        self.forget_listing().await;
        self.view(sale).await
    }

    /// Ends a sale now: MongoDB records it first (so no rebuild can undo
    /// it), then Redis stops taking holds.
    pub async fn close(&self, sale: &SaleId) -> Result<SaleView, ApiError> {
        let doc = self.recovery.sale_doc(sale).await?;
        let (version, ends) = match doc.closed_at {
            Some(_) => (doc.version, doc.ends_at),
            None => {
                let now = BsonDateTime::from_chrono(self.now().await?);
                let ends = now.min(doc.ends_at);
                self.fault()?;
                if !self
                    .store
                    .mongo
                    .close_sale_if(sale, doc.version, now, ends)
                    .await?
                {
                    return Err(changed_meanwhile());
                }
                (doc.version + 1, ends)
            }
        };
        let reply = self
            .recovery
            .with_sale(sale, || {
                self.store
                    .redis
                    .close_sale(sale, ends.timestamp_millis(), version)
            })
            .await?;
        match reply {
            CloseReply::Ok | CloseReply::Ended => self.view(sale).await,
            CloseReply::Missing => Err(ApiError::rebuilding()),
        }
    }
}

/// The listing's sales by id.
fn ids_of(docs: &[SaleDoc]) -> Vec<SaleId> {
    docs.iter()
        .filter_map(|d| SaleId::parse(&d.id).ok())
        .collect()
}

fn changed_meanwhile() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidChange,
        "the sale changed meanwhile; read it again and retry",
    )
}
