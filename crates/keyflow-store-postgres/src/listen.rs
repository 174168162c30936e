//! LISTEN on [`CHANNEL`]: a background task that reports every committed key change
//! (and every reconnection, after which changes may have been missed) to a callback.

use std::time::Duration;

use keyflow_kms::keystore::StoreError;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// The notification channel. Its payload is the new change generation (decimal).
pub const CHANNEL: &str = "keyflow_keys";

/// What a listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChange {
    /// A transaction that changed a key version committed; the generation it set
    /// (`None` if the payload did not parse, which a well-behaved writer never sends).
    Committed {
        /// The new generation.
        generation: Option<i64>,
    },
    /// The listener (re)subscribed after losing its connection: notifications sent in
    /// between are lost, so the owner should re-check the generation.
    Resubscribed,
}

/// A running subscription; dropping it stops the task and closes its connection.
#[derive(Debug)]
pub struct ChangeListener {
    task: JoinHandle<()>,
}

impl ChangeListener {
    /// Whether the background task is still running (it only ends when stopped).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listener's own one-connection pool: it never takes a connection from the
/// keystore's pool, and the pool re-opens the connection after a failure.
fn listener_pool(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone().application_name("keyflow-listener"))
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool is the listener's own; nothing closes it but this task.
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Subscribes now (the error if that fails) and reports from a background task.
pub(crate) async fn start<F>(
    options: &PgConnectOptions,
    on_change: F,
) -> Result<ChangeListener, StoreError>
where
    F: Fn(KeyChange) + Send + Sync + 'static,
{
    let pool = listener_pool(options);
    let first = subscribe(&pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot LISTEN {CHANNEL}: {e}")))?;
    Ok(ChangeListener {
        task: tokio::spawn(run(pool, Some(first), on_change)),
    })
}

/// Subscribes from the background task (with retries), for callers that cannot wait;
/// `None` outside a tokio runtime. Reports [`KeyChange::Resubscribed`] once the first
/// subscription is in place, as changes before it went unheard.
pub(crate) fn spawn<F>(options: PgConnectOptions, on_change: F) -> Option<ChangeListener>
where
    F: Fn(KeyChange) + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let pool = listener_pool(&options);
    Some(ChangeListener {
        task: runtime.spawn(run(pool, None, on_change)),
    })
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn run<F>(pool: PgPool, mut current: Option<PgListener>, on_change: F)
where
    F: Fn(KeyChange) + Send + Sync + 'static,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listener = match current.take() {
            Some(l) => l,
            None => match subscribe(&pool).await {
                Ok(l) => {
                    on_change(KeyChange::Resubscribed);
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel = CHANNEL, "LISTEN failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        backoff = MIN_BACKOFF;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => on_change(KeyChange::Committed {
                    generation: n.payload().parse().ok(),
                }),
                // The connection dropped and sqlx re-subscribed on a new one.
                Ok(None) => {
                    tracing::info!(channel = CHANNEL, "listener reconnected");
                    on_change(KeyChange::Resubscribed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel = CHANNEL, "listener failed; reconnecting");
                    break;
                }
            }
        }
        drop(listener);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
