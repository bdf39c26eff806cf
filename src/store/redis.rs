//! Redis keys of a sale and the Lua scripts that change them. Every script is
//! a file in `lua/` with the shared prelude in front; `redis::Script` calls it
//! by SHA and loads it once when Redis does not know it yet.

use std::sync::Arc;

use redis::{Script, aio::ConnectionManager};
use serde::de::DeserializeOwned;

use super::StoreError;

/// Keys of one sale. All share the hash tag `{<sale_id>}`, so every script
/// touches a single slot and runs unchanged on Redis Cluster.
#[derive(Debug, Clone)]
pub struct SaleKeys {
    prefix: String,
}

impl SaleKeys {
    pub fn new(sale_id: &str) -> Self {
        Self {
            prefix: format!("fd:{{{sale_id}}}:"),
        }
    }
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    pub fn sale(&self) -> String {
        self.key("sale")
    }
    pub fn free(&self) -> String {
        self.key("free")
    }
    pub fn deadlines(&self) -> String {
        self.key("deadlines")
    }
    pub fn bought(&self) -> String {
        self.key("bought")
    }
    pub fn holding(&self) -> String {
        self.key("holding")
    }
    pub fn events(&self) -> String {
        self.key("events")
    }
    pub fn wait(&self) -> String {
        self.key("wait")
    }
    pub fn waitq(&self) -> String {
        self.key("waitq")
    }
    pub fn promoted(&self) -> String {
        self.key("promoted")
    }
    pub fn hold(&self, rid: &str) -> String {
        self.key(&format!("hold:{rid}"))
    }
    pub fn idempotency(&self, buyer: &str, key: &str) -> String {
        self.key(&format!("idem:{}:{buyer}:{key}", buyer.len()))
    }
    pub fn restore_lock(&self) -> String {
        self.key("restore")
    }
    /// The pub/sub channel of the live feed.
    pub fn channel(&self) -> String {
        self.key("live")
    }
}

macro_rules! lua {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../../lua/prelude.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

/// Every script, built once per process.
pub struct Scripts {
    pub open_sale: Script,
    pub update_sale: Script,
    pub close_sale: Script,
    pub reserve: Script,
    pub confirm_begin: Script,
    pub confirm_finish: Script,
    pub confirm_abort: Script,
    pub cancel: Script,
    pub reap: Script,
    pub repair_hold: Script,
    pub waitlist_join: Script,
    pub waitlist_leave: Script,
    pub unlock: Script,
}

impl Scripts {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open_sale: lua!("open_sale.lua"),
            update_sale: lua!("update_sale.lua"),
            close_sale: lua!("close_sale.lua"),
            reserve: lua!("reserve.lua"),
            confirm_begin: lua!("confirm_begin.lua"),
            confirm_finish: lua!("confirm_finish.lua"),
            confirm_abort: lua!("confirm_abort.lua"),
            cancel: lua!("cancel.lua"),
            reap: lua!("reap.lua"),
            repair_hold: lua!("repair_hold.lua"),
            waitlist_join: lua!("waitlist_join.lua"),
            waitlist_leave: lua!("waitlist_leave.lua"),
            unlock: Script::new(include_str!("../../lua/unlock.lua")),
        })
    }
}

/// Runs a script whose reply is a JSON document and decodes it.
pub async fn run_json<T: DeserializeOwned>(
    conn: &mut ConnectionManager,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<T, StoreError> {
    let raw: String = invocation.invoke_async(conn).await?;
    serde_json::from_str(&raw)
        .map_err(|e| StoreError::Other(anyhow::anyhow!("bad script reply {raw:?}: {e}")))
}

pub async fn connect(url: &str) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Other(anyhow::anyhow!("FLASHDROP_REDIS_URL: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(5)))
        .set_number_of_retries(2);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}
