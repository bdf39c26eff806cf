//! The command connection: one multiplexed connection to a single Redis, or
//! redis-rs's cluster connection, which follows MOVED and ASK and loads a
//! script on the node that serves its slot. The rest of the store talks to
//! either through the same `ConnectionLike`.

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// A connection of its own, for tools and tests that read Redis
    /// directly: to the single node `nodes[0]`, or to the cluster that
    /// `nodes` are seeds of.
    pub async fn open(nodes: &[String], cluster: bool) -> Result<Self, super::StoreError> {
        Ok(match cluster {
            true => Conn::Cluster(
                redis::cluster::ClusterClient::new(nodes.to_vec())?
                    .get_async_connection()
                    .await?,
            ),
            false => {
                Conn::Single(ConnectionManager::new(redis::Client::open(nodes[0].as_str())?).await?)
            }
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
