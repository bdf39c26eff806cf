//! How an instance stops without dropping anyone. On SIGTERM it first
//! stops being ready (`/readyz` answers 503 at once, new live sockets are
//! refused with 503) but goes on serving for `FLASHDROP_DRAIN`, the time a
//! load balancer (Kubernetes' endpoints) takes to stop sending it work.
//! Then it closes each live socket with 1012 (service restart), so clients
//! reconnect to another instance and resync from a snapshot, stops taking
//! connections, lets requests in flight (and their group commits) finish,
//! and stops its background loops.

use tokio_util::sync::CancellationToken;

/// The two moments of a stop, shared by whatever must react to them.
#[derive(Clone, Default)]
pub struct Stopping {
    /// The stop began: not ready any more.
    unready: CancellationToken,
    /// The drain is over: live sockets close.
    closing: CancellationToken,
}

impl Stopping {
    /// Whether the stop has begun.
    pub fn is_unready(&self) -> bool {
        self.unready.is_cancelled()
    }

    pub fn begin(&self) {
        self.unready.cancel();
    }

    pub fn close_sockets(&self) {
        self.closing.cancel();
    }

    /// Resolves when live sockets must close.
    pub async fn closing(&self) {
        self.closing.cancelled().await
    }
}
