//! A local Redis Cluster of real `redis-server`s (`cluster-enabled yes`),
//! joined by `redis-cli --cluster create`: the shared one of a cluster run,
//! or one of a test's own when it flushes or breaks it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::helpers::{die_with_parent, wait_for_port};

/// One master of a [`RedisCluster`].
pub struct ClusterNode {
    pub port: u16,
    /// None for a node of a cluster this harness did not start.
    child: Option<Child>,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection to this node alone (no redirects followed).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The node's id in the cluster.
    pub fn id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.connection())
            .unwrap()
    }
}

/// Masters, each with `replicas` replicas; stopped (and their files
/// removed) when dropped.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    dir: Option<PathBuf>,
}

/// `n` distinct free ports, held open together so none is handed out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        Self::start_with_replicas(masters, 0)
    }

    pub fn start_with_replicas(masters: usize, replicas: usize) -> Self {
        let ports = free_ports(masters * (1 + replicas) * 2);
        let dir = std::env::temp_dir().join(format!(
            "flashdrop-test-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<ClusterNode> = ports
            .chunks(2)
            .map(|pair| {
                let (port, bus) = (pair[0], pair[1]);
                let child = die_with_parent(
                    Command::new("redis-server")
                        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                        .args(["--cluster-enabled", "yes"])
                        .args(["--cluster-port", &bus.to_string()])
                        .arg("--cluster-config-file")
                        .arg(dir.join(format!("nodes-{port}.conf")))
                        .args(["--cluster-node-timeout", "2000"])
                        // A replica must hold a copy before its master can die:
                        // no wait for more replicas before the first sync.
                        .args(["--repl-diskless-sync-delay", "0"])
                        .arg("--dir")
                        .arg(&dir)
                        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                )
                .spawn()
                .expect("redis-server is installed (scripts/test installs it)");
                ClusterNode {
                    port,
                    child: Some(child),
                }
            })
            .collect();
        for node in &nodes {
            wait_for_port(node.port, "redis-server (cluster node)");
        }
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed (it comes with redis-server)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self {
            nodes,
            dir: Some(dir),
        };
        cluster.wait_until_agreed();
        if replicas > 0 {
            cluster.wait_until_replicas_synced();
        }
        cluster
    }

    /// A cluster started elsewhere, known by its seeds (all its masters).
    pub fn attach(seeds: &str) -> Self {
        let nodes = seeds
            .split(',')
            .map(|url| {
                let port = url.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                ClusterNode {
                    port: port.unwrap_or_else(|| panic!("{url:?} is not redis://host:port")),
                    child: None,
                }
            })
            .collect();
        Self { nodes, dir: None }
    }

    /// Waits until every node reports the cluster up and knows every other.
    pub fn wait_until_agreed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.connection())
                    .unwrap();
                let known = format!("cluster_known_nodes:{}", self.nodes.len());
                if info.contains("cluster_state:ok") && info.contains(&known) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster never came up: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every replica has finished its first sync with its
    /// master: before that, a replica has no copy and cannot take over.
    pub fn wait_until_replicas_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut node.connection())
                    .unwrap();
                let ready = info.contains("role:master")
                    || (info.contains("master_link_status:up")
                        && info.contains("master_sync_in_progress:0"));
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {} never synced: {info}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The seed list flashdrop takes in FLASHDROP_REDIS_URL.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(ClusterNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        let mut child = node.child.take().expect("a node this harness started");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The node that serves `slot` now, as the first live node sees it.
    pub fn owner_of(&self, slot: u16) -> &ClusterNode {
        self.serving(slot).expect("every slot is served")
    }

    /// The node that serves `slot`, if a node not marked failing does.
    pub fn serving(&self, slot: u16) -> Option<&ClusterNode> {
        let nodes: String = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some() || self.dir.is_none())
            .find_map(|n| {
                let mut conn = redis::Client::open(n.url()).ok()?.get_connection().ok()?;
                redis::cmd("CLUSTER").arg("NODES").query(&mut conn).ok()
            })
            .expect("a live node");
        // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
        let port = nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2).is_some_and(|flags| flags.contains("fail")) {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false, // [slot->-id]: a migration in progress
                }
            });
            let addr = fields.get(1)?.split('@').next()?;
            serves.then(|| addr.rsplit(':').next()?.parse::<u16>().ok())?
        })?;
        self.nodes.iter().find(|n| n.port == port)
    }
}

/// The cluster slot of a key (as `CLUSTER KEYSLOT` computes it).
pub fn slot_of(node: &ClusterNode, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut node.connection())
        .unwrap()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
