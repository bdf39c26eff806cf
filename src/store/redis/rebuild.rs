//! What a rebuild writes before `restore_sale` swaps it in: the lock
//! that makes one instance the rebuilder, and the staged keys.

use std::{collections::HashMap, time::Duration};

use super::Redis;
use crate::{
    ids::SaleId,
    store::{
        StoreError,
        keys::{Role, STAGED, SaleKeys},
        scripts::{LobbyWaiter, LockReply},
    },
};

impl Redis {
    /// Takes the sale's rebuild lock for `ttl` unless someone holds it.
    pub async fn lock_rebuild(
        &self,
        sale: &SaleId,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(SaleKeys::new(sale).restore())
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.is_some())
    }

    /// Stages what a rebuild will swap in (see `lua/restore_sale.lua`):
    /// free serials, bought counts, the waiting list and the lobby, under
    /// keys named by the rebuild's lock token (the roles of [`STAGED`]),
    /// which expire on their own if the rebuild dies. The lock is renewed
    /// as the staging goes; `false` when it was lost.
    pub async fn stage_rebuild(
        &self,
        sale: &SaleId,
        token: &str,
        free: impl IntoIterator<Item = i64>,
        staging: Staging<'_>,
        lock_ttl: Duration,
    ) -> Result<bool, StoreError> {
        let Staging {
            bought,
            returned,
            line,
            lobby,
        } = staging;
        const CHUNK: usize = 10_000;
        const CHUNKS_PER_CALL: usize = 10;
        let keys = SaleKeys::new(sale);
        let staged: HashMap<Role, String> = STAGED
            .iter()
            .map(|(live, staging)| (*live, keys.staging(*staging, token)))
            .collect();
        let key = |role: Role| staged[&role].as_str();
        let mut pipe = redis::pipe();
        pipe.del(staged.values().collect::<Vec<_>>()).ignore();
        let mut chunks = 0;
        let flush = async |pipe: &mut redis::Pipeline| -> Result<bool, StoreError> {
            pipe.query_async::<()>(&mut self.conn()).await?;
            *pipe = redis::pipe();
            let renewed = self.rebuild_lock(sale, token, Some(lock_ttl)).await?;
            Ok(matches!(renewed, LockReply::Held))
        };
        let mut batch = Vec::with_capacity(CHUNK);
        for serial in free {
            batch.push(serial);
            if batch.len() == CHUNK {
                pipe.sadd(key(Role::Free), std::mem::take(&mut batch))
                    .ignore();
                chunks += 1;
                if chunks % CHUNKS_PER_CALL == 0 && !flush(&mut pipe).await? {
                    return Ok(false);
                }
            }
        }
        if !batch.is_empty() {
            pipe.sadd(key(Role::Free), batch).ignore();
        }
        for chunk in bought.into_iter().collect::<Vec<_>>().chunks(CHUNK) {
            pipe.hset_multiple(key(Role::Bought), chunk).ignore();
        }
        for chunk in returned.chunks(CHUNK) {
            let marks: Vec<(&str, i64)> = chunk.iter().map(|id| (id.as_str(), 1)).collect();
            pipe.hset_multiple(key(Role::Returned), &marks).ignore();
        }
        for chunk in line.chunks(CHUNK) {
            let tickets: Vec<(i64, &str)> =
                chunk.iter().map(|w| (w.ticket, w.buyer.as_str())).collect();
            let wants: Vec<(&str, i64)> = chunk
                .iter()
                .map(|w| (w.buyer.as_str(), w.quantity))
                .collect();
            pipe.zadd_multiple(key(Role::Wait), &tickets).ignore();
            pipe.hset_multiple(key(Role::Waitq), &wants).ignore();
        }
        for chunk in lobby.early.chunks(CHUNK) {
            pipe.hset_multiple(key(Role::Early), chunk).ignore();
        }
        for chunk in lobby.waiting.chunks(CHUNK) {
            let members: Vec<(i64, &str)> = chunk.iter().map(|w| (0, w.member.as_str())).collect();
            let places: Vec<(&str, String)> = chunk
                .iter()
                .map(|w| (w.buyer.as_str(), format!("{} {}", w.joined_ms, w.member)))
                .collect();
            pipe.zadd_multiple(key(Role::Lobby), &members).ignore();
            pipe.hset_multiple(key(Role::Lobbyin), &places).ignore();
        }
        for chunk in lobby.admitted.chunks(CHUNK) {
            let values: Vec<(&str, &str)> = chunk
                .iter()
                .map(|a| (a.buyer.as_str(), a.value.as_str()))
                .collect();
            let due: Vec<(i64, &str)> = chunk
                .iter()
                .filter_map(|a| a.due.map(|d| (d, a.buyer.as_str())))
                .collect();
            pipe.hset_multiple(key(Role::Admitted), &values).ignore();
            if !due.is_empty() {
                pipe.zadd_multiple(key(Role::Admitdue), &due).ignore();
            }
        }
        for key in staged.values() {
            pipe.pexpire(key, (lock_ttl.as_millis() as i64) * 2)
                .ignore();
        }
        flush(&mut pipe).await
    }
}

/// What a rebuild stages besides the free serials: the bought counts, the
/// cancelled orders, the waiting list and the lobby.
#[derive(Debug)]
pub struct Staging<'a> {
    pub bought: HashMap<String, i64>,
    /// Cancelled orders, whose units are free already.
    pub returned: &'a [String],
    pub line: &'a [Waiter],
    pub lobby: &'a LobbyStage,
}

/// What a rebuild stages of a sale's lobby.
#[derive(Debug, Default)]
pub struct LobbyStage {
    /// Joined before the start, before the draw: buyer and joined ms.
    pub early: Vec<(String, i64)>,
    /// Waiting at their place in the draw, or behind it.
    pub waiting: Vec<LobbyWaiter>,
    pub admitted: Vec<LobbyAdmission>,
}

/// An admission as `admitted` keeps it, and its deadline while unused.
#[derive(Debug)]
pub struct LobbyAdmission {
    pub buyer: String,
    pub value: String,
    pub due: Option<i64>,
}

/// A buyer in a waiting list as a rebuild restores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub buyer: String,
    pub ticket: i64,
    pub quantity: i64,
}
