//! The outbox: every message for the webhook endpoints, written with its
//! cause. A message is *staged*, with its place in its sale's sequence,
//! before its cause is written, and made *ready* after. One whose writer
//! stopped between the two is settled from the cause itself
//! ([`Mongo::settle_staged`]): ready when the cause is durable, else void
//! (an order's `_id` is fenced first, so that order can never land later).
//! A writer that finds its message void (settled while its cause was in
//! flight) brings it back under a fresh place. So a cause never stands
//! without its message, and no message is sent without its cause.
//!
//! Places: `outbox_seqs` hands out each sale's seqs and `(sale_id, seq)`
//! is unique. A place handed out but never used (its writer stopped
//! between) is a gap: the deliverer closes a gap that stays open with a
//! void tombstone, and a writer that finds its place taken takes another.

use std::collections::BTreeMap;

use super::{
    DUPLICATE_KEY, Mongo, OrderLookup, is_duplicate_key,
    messages::{Message, MessageState, MessageType, OutboxDoc},
    orders::Fence,
};
use crate::{
    ids::{ReservationId, SaleId},
    store::StoreError,
};
use bson::doc;
use futures_util::TryStreamExt;
use mongodb::{
    IndexModel,
    error::ErrorKind,
    options::{IndexOptions, ReturnDocument},
};

impl Mongo {
    pub(super) async fn ensure_outbox_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexOptions::builder()
            .unique(true)
            .name("outbox_seq_unique".to_owned())
            .build();
        self.outbox
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"sale_id": 1, "seq": 1})
                    .options(unique)
                    .build(),
            )
            .await?;
        self.ensure_webhook_indexes().await
    }

    /// Stages messages before their causes are written. A message already
    /// staged or ready stays as it is; a void one comes back.
    /// Messages no endpoint wants are not written (`interest.rs`). Returns
    /// the messages staged: what to make ready or void once the causes are
    /// settled, decided here once, so an endpoint that goes away meanwhile
    /// leaves nothing staged.
    pub async fn stage_messages(&self, messages: &[Message]) -> Result<Vec<Message>, StoreError> {
        let wanted = self.interest.filter(messages);
        self.place(&wanted, MessageState::Staged).await?;
        Ok(wanted.into_iter().cloned().collect())
    }

    /// Writes messages whose cause needs no fence (a sale's end), ready.
    pub async fn post_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        self.place(&self.interest.filter(messages), MessageState::Ready)
            .await
    }

    /// Makes messages `stage_messages` staged ready once their causes are
    /// durable; one settled void meanwhile comes back under a fresh place.
    pub async fn ready_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let changed = self
            .bounded(async {
                let r = self
                    .outbox
                    .update_many(
                        doc! {"_id": {"$in": &ids}, "state": "staged"},
                        doc! {"$set": {"state": "ready"}},
                    )
                    .await?;
                Ok(r.modified_count)
            })
            .await?;
        if changed as usize == ids.len() {
            return Ok(());
        }
        let void: Vec<OutboxDoc> = self
            .bounded(async {
                Ok(self
                    .outbox
                    .find(doc! {"_id": {"$in": &ids}, "state": "void"})
                    .await?
                    .try_collect()
                    .await?)
            })
            .await?;
        for doc in void {
            self.revive(&doc.id, &doc.sale_id, MessageState::Ready)
                .await?;
        }
        Ok(())
    }

    /// Gives up messages `stage_messages` staged whose causes were
    /// certainly not written (a writer that tries again stages them again).
    pub async fn void_messages(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        self.bounded(async {
            self.outbox
                .update_many(
                    doc! {"_id": {"$in": &ids}, "state": "staged"},
                    doc! {"$set": {"state": "void"}},
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn place(&self, messages: &[&Message], state: MessageState) -> Result<(), StoreError> {
        let mut by_sale: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
        for m in messages {
            by_sale.entry(m.sale_id.as_str()).or_default().push(m);
        }
        for (sale, mut todo) in by_sale {
            for _ in 0..8 {
                if todo.is_empty() {
                    break;
                }
                todo = self.place_some(sale, &todo, state).await?;
            }
            if !todo.is_empty() {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "no free outbox places for sale {sale}"
                )));
            }
        }
        for m in messages {
            let kind: &'static str = m.kind.into();
            metrics::counter!("flashdrop_outbox_messages_total", "type" => kind).increment(1);
        }
        Ok(())
    }

    /// Inserts one sale's messages under fresh places; returns those to
    /// try again (their place was closed as a gap meanwhile).
    async fn place_some<'m>(
        &self,
        sale: &str,
        todo: &[&'m Message],
        state: MessageState,
    ) -> Result<Vec<&'m Message>, StoreError> {
        let last = self.take_places(sale, todo.len() as i64).await?;
        let first = last - todo.len() as i64 + 1;
        let now = crate::clock::LocalClock::default().now_bson();
        let docs: Vec<OutboxDoc> = todo
            .iter()
            .enumerate()
            .map(|(i, m)| m.doc(first + i as i64, state, now))
            .collect();
        let refused: Vec<usize> = self
            .bounded(async {
                match self.outbox.insert_many(&docs).ordered(false).await {
                    Ok(_) => Ok(vec![]),
                    Err(e) => match &*e.kind {
                        ErrorKind::InsertMany(f)
                            if f.write_concern_error.is_none()
                                && f.write_errors
                                    .iter()
                                    .flatten()
                                    .all(|w| w.code == DUPLICATE_KEY) =>
                        {
                            Ok(f.write_errors.iter().flatten().map(|w| w.index).collect())
                        }
                        _ => Err(e.into()),
                    },
                }
            })
            .await?;
        let mut again = Vec::new();
        for i in refused {
            let m = todo[i];
            match self.message(&m.id).await? {
                // Its place was taken: try another.
                None => again.push(m),
                Some(d) => {
                    // Written before: the place taken for it stays unused,
                    // so it is closed at once rather than waited for.
                    self.close_gap(sale, docs[i].seq).await?;
                    if d.state == MessageState::Void {
                        self.revive(&d.id, &d.sale_id, state).await?
                    }
                }
            }
        }
        Ok(again)
    }

    /// Hands out `n` places of the sale's sequence; returns the last.
    /// A sale's sequence is created (at 0) by the first writer that finds
    /// none; writers racing to create it all go on with the one that won.
    /// No upsert: one whose answer was lost would leave a place unused.
    async fn take_places(&self, sale: &str, n: i64) -> Result<i64, StoreError> {
        self.bounded(async {
            for _ in 0..2 {
                let taken = self
                    .outbox_seqs
                    .find_one_and_update(
                        doc! {"_id": sale},
                        doc! {"$inc": {"seq": n},
                        "$set": {"at": crate::clock::LocalClock::default().now_bson()}},
                    )
                    .return_document(ReturnDocument::After)
                    .await?;
                if let Some(d) = taken {
                    return Ok(d
                        .get_i64("seq")
                        .or_else(|_| d.get_i32("seq").map(i64::from))
                        .unwrap_or(0));
                }
                let start = doc! {"_id": sale, "seq": 0_i64};
                if let Err(e) = self.outbox_seqs.insert_one(start).await
                    && !is_duplicate_key(&e)
                {
                    return Err(e.into());
                }
            }
            Err(anyhow::anyhow!("no outbox sequence for sale {sale}").into())
        })
        .await
    }

    /// A void message back, `state`, under a fresh place.
    async fn revive(&self, id: &str, sale: &str, state: MessageState) -> Result<(), StoreError> {
        let state = bson::to_bson(&state).map_err(|e| anyhow::anyhow!("{e}"))?;
        for _ in 0..8 {
            let seq = self.take_places(sale, 1).await?;
            let revived = self
                .bounded(async {
                    match self
                        .outbox
                        .update_one(
                            doc! {"_id": id, "state": "void"},
                            doc! {"$set": {"state": &state, "seq": seq, "created_at": crate::clock::LocalClock::default().now_bson()}},
                        )
                        .await
                    {
                        Ok(r) => Ok(Some(r.matched_count > 0)),
                        Err(e) if is_duplicate_key(&e) => Ok(None),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
            if revived == Some(false) {
                // Another writer brought it back first.
                self.close_gap(sale, seq).await?;
                return Ok(());
            }
            if revived == Some(true) {
                tracing::info!(
                    message = id,
                    seq,
                    "an outbox message came back with its cause"
                );
                return Ok(());
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "no free outbox place to bring back {id}"
        )))
    }

    pub async fn message(&self, id: &str) -> Result<Option<OutboxDoc>, StoreError> {
        self.bounded(async { Ok(self.outbox.find_one(doc! {"_id": id}).await?) })
            .await
    }

    /// The sale's messages after `seq`, in order.
    pub async fn messages_after(
        &self,
        sale: &str,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<OutboxDoc>, StoreError> {
        self.bounded(async {
            Ok(self
                .outbox
                .find(doc! {"sale_id": sale, "seq": {"$gt": seq}})
                .sort(doc! {"seq": 1})
                .limit(limit)
                .await?
                .try_collect()
                .await?)
        })
        .await
    }

    /// Each sale's last place handed out.
    pub async fn outbox_heads(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.bounded(async {
            let docs: Vec<bson::Document> =
                self.outbox_seqs.find(doc! {}).await?.try_collect().await?;
            Ok(docs
                .into_iter()
                .filter_map(|d| {
                    let seq = d
                        .get_i64("seq")
                        .or_else(|_| d.get_i32("seq").map(i64::from))
                        .ok()?;
                    Some((d.get_str("_id").ok()?.to_owned(), seq))
                })
                .collect())
        })
        .await
    }

    /// Closes a place nobody used with a void tombstone; false when a
    /// message (or another tombstone) took it first.
    pub async fn close_gap(&self, sale: &str, seq: i64) -> Result<bool, StoreError> {
        let now = crate::clock::LocalClock::default().now_bson();
        let tombstone = OutboxDoc {
            id: format!("gap:{sale}:{seq}"),
            sale_id: sale.to_owned(),
            seq,
            kind: None,
            state: MessageState::Void,
            cause: String::new(),
            data: "{}".into(),
            at: now,
            created_at: now,
        };
        self.bounded(async {
            match self.outbox.insert_one(&tombstone).await {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Settles a message its writer left staged: ready when its cause is
    /// durable, else void (an order is fenced off first, so it never lands
    /// later). Returns the state it has now.
    pub async fn settle_staged(&self, doc: &OutboxDoc) -> Result<MessageState, StoreError> {
        let caused = self.cause_is_durable(doc).await?;
        let state = if caused {
            MessageState::Ready
        } else {
            MessageState::Void
        };
        let state_bson = bson::to_bson(&state).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.bounded(async {
            self.outbox
                .update_one(
                    doc! {"_id": &doc.id, "state": "staged"},
                    doc! {"$set": {"state": state_bson}},
                )
                .await?;
            Ok(())
        })
        .await?;
        // A cause that landed between the look and the void (its writer
        // stopped before making it ready) brings its message back.
        if !caused
            && doc.kind != Some(MessageType::OrderConfirmed)
            && self.cause_is_durable(doc).await?
        {
            self.revive(&doc.id, &doc.sale_id, MessageState::Ready)
                .await?;
        }
        let now = self.message(&doc.id).await?;
        tracing::warn!(message = %doc.id, ?state, "settled an outbox message its writer left staged");
        Ok(now.map_or(MessageState::Void, |d| d.state))
    }

    async fn cause_is_durable(&self, doc: &OutboxDoc) -> Result<bool, StoreError> {
        let Some(kind) = doc.kind else {
            return Ok(false);
        };
        Ok(match kind {
            MessageType::OrderConfirmed => self.order_is_durable(&doc.cause).await?,
            MessageType::OrderCancelled => self.cancelled_order(&doc.cause).await?.is_some(),
            MessageType::PaymentRefundDue => self.refund(&doc.cause).await?.is_some(),
            MessageType::SaleSoldOut => {
                let sold = doc.cause.parse::<i64>().unwrap_or(-1);
                let Ok(sale) = SaleId::parse(&doc.sale_id) else {
                    return Ok(false);
                };
                self.has_change(
                    &sale,
                    doc! {"kind": "sale_closed", "sold": sold, "available": 0_i64, "held": 0_i64},
                )
                .await?
            }
            MessageType::SaleEnded => true,
        })
    }

    /// Whether the order landed (cancelled since or not); when it has not,
    /// fences it off so it never will.
    async fn order_is_durable(&self, id: &str) -> Result<bool, StoreError> {
        let Ok(rid) = ReservationId::parse(id) else {
            return Ok(false);
        };
        match self.lookup(id).await? {
            OrderLookup::Order(_) | OrderLookup::Cancelled => return Ok(true),
            OrderLookup::Voided => return Ok(false),
            OrderLookup::Absent => {}
        }
        if self.cancelled_order(id).await?.is_some() {
            return Ok(true);
        }
        match self
            .fence_order(&rid, crate::clock::LocalClock::default().now_bson())
            .await?
        {
            Fence::Ordered(_) => Ok(true),
            // Cancelled (so out of `orders`) between the looks.
            Fence::Voided => Ok(self.cancelled_order(id).await?.is_some()),
        }
    }
}
