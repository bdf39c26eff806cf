//! The command connection: one multiplexed connection to a single Redis, or
//! redis-rs's cluster connection, which follows MOVED and ASK and loads a
//! script on the node that serves its slot. The rest of the store talks to
//! either through the same `ConnectionLike`.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
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
    /// `nodes` are seeds of. It waits up to 30 s for an answer (a tool may
    /// read a large sale from a busy Redis; the driver's default is 0.5 s).
    pub async fn open(nodes: &[String], cluster: bool) -> Result<Self, super::StoreError> {
        let patient = Some(Duration::from_secs(30));
        Ok(match cluster {
            true => Conn::Cluster(
                redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
                    .response_timeout(Duration::from_secs(30))
                    .build()?
                    .get_async_connection()
                    .await?,
            ),
            false => Conn::Single(
                ConnectionManager::new_with_config(
                    redis::Client::open(nodes[0].as_str())?,
                    ConnectionManagerConfig::new().set_response_timeout(patient),
                )
                .await?,
            ),
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
