//! Wiring: builds the store, the bus and the roles from settings and runs them until
//! shutdown. `renkei up --roles …` calls [`run`].

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEntry, AuditRow};
use crate::bus::amqp::AmqpBus;
use crate::bus::embedded::{EmbeddedBus, ProcessLock};
use crate::bus::{Bus, QueueRole};
use crate::config::Settings;
use crate::delivery::DeliveryWorker;
use crate::delivery::destination::DestinationPolicy;
use crate::ingest::Ingestor;
use crate::registry::document::{Change, RegistryDocument};
use crate::router::Router;
use crate::store::sqlite::SqliteStore;
use crate::store::{AdminStore, DeliveryFilter, DeliverySummary, SEAL_BATCH, Store, StoreError};

/// A part of the hub that can run in a process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Role {
    /// Every enabled source of the configuration (`[sources.*]`: the MLLP listener by
    /// default). `mllp` is accepted as its former name.
    #[value(alias = "mllp")]
    Ingest,
    /// Router (consumes events, writes deliveries).
    Router,
    /// Delivery workers (webhooks).
    Delivery,
    /// Admin HTTP API.
    Api,
}

/// Opens the store `database.url` names and applies its migrations.
pub async fn connect_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    crate::store::open(&settings.database)
        .await
        .context("cannot open the database (database.url / RENKEI__DATABASE__URL)")
}

/// The bus URL that selects the in-process queue.
pub const EMBEDDED_BUS: &str = "embedded";

/// Opens the store and the bus the configuration names: `bus.url = "embedded"` keeps
/// the queue in the SQLite database of `database.url`, written through the store's
/// one writing connection, and holds the file for this process alone.
pub async fn connect(settings: &Settings) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    if settings.bus.url != EMBEDDED_BUS {
        let store = connect_store(settings).await?;
        let bus: Arc<dyn Bus> = Arc::new(connect_bus(settings).await?);
        return Ok((store, bus));
    }
    let url = &settings.database.url;
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "bus.url = \"embedded\" keeps its queue in the SQLite database, but database.url \
             is not `sqlite://…`: use both embedded (`sqlite://renkei.db` and `embedded`) or \
             PostgreSQL with RabbitMQ (`postgres://…` and `amqp://…`)"
        );
    }
    let path = crate::store::sqlite::database_file(url)
        .context("cannot open the database (database.url / RENKEI__DATABASE__URL)")?;
    // First, before anything touches the file: a second hub stops here.
    let lock = ProcessLock::acquire(&path)?;
    let store = SqliteStore::open(
        url,
        settings.database.max_connections,
        settings.database.acquire_timeout,
    )
    .await
    .context("cannot open the database (database.url / RENKEI__DATABASE__URL)")?;
    let bus = EmbeddedBus::with_pool(
        store.writer().clone(),
        lock,
        &settings.delivery.retry_schedule,
    )
    .await
    .context("cannot open the embedded bus (bus.url = \"embedded\")")?;
    Ok((Arc::new(store), Arc::new(bus)))
}

/// Connects to RabbitMQ and declares the topology.
pub async fn connect_bus(settings: &Settings) -> anyhow::Result<AmqpBus> {
    AmqpBus::connect(&settings.bus, &settings.delivery.retry_schedule)
        .await
        .context("cannot connect to RabbitMQ (bus.url / RENKEI__BUS__URL)")
}

/// Runs the given roles until `shutdown` is cancelled.
pub async fn run(
    settings: Settings,
    roles: BTreeSet<Role>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if roles.contains(&Role::Ingest) {
        crate::ingest::sources::check(&settings)?;
    }
    let (store, bus) = connect(&settings).await?;
    let mut tasks = tokio::task::JoinSet::new();

    // Built first: with the router in the same process, it takes the router's
    // deliveries directly instead of through the delivery queue.
    let worker = if roles.contains(&Role::Delivery) {
        Some(Arc::new(
            DeliveryWorker::new(store.clone(), bus.clone(), settings.delivery.clone())
                .context("cannot build the webhook HTTP client")?,
        ))
    } else {
        None
    };
    if roles.contains(&Role::Router) {
        let router = Arc::new(match &worker {
            Some(worker) => Router::with_handoff(store.clone(), worker.clone()),
            None => Router::new(store.clone(), bus.clone()),
        });
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        let concurrency = settings.router.concurrency;
        tasks.spawn(async move {
            bus.consume(QueueRole::Route, concurrency, router, shutdown)
                .await;
            Ok(())
        });
    }
    if let Some(worker) = worker {
        // Retries, replays and other processes' routers still come through the queue.
        let (bus, shutdown) = (bus.clone(), shutdown.clone());
        let concurrency = settings.delivery.concurrency;
        tasks.spawn(async move {
            bus.consume(QueueRole::Deliver, concurrency, worker, shutdown)
                .await;
            Ok(())
        });
    }
    if roles.contains(&Role::Ingest) {
        let ingestor: Arc<dyn renkei_sdk::IngestSink> = Arc::new(Ingestor::new(
            store.clone(),
            bus.clone(),
            settings.database.acquire_timeout,
        ));
        for (name, task) in
            crate::ingest::sources::start(&settings, ingestor, store.clone(), &shutdown).await?
        {
            tasks.spawn(async move {
                task.await
                    .with_context(|| format!("source `{name}` stopped"))
            });
        }
    }
    if roles.contains(&Role::Api) {
        let state = crate::api::ApiState {
            admin: Arc::new(GuardedAdmin {
                store: store.clone(),
                destinations: DestinationPolicy::new(
                    settings.delivery.allowed_destinations.clone(),
                ),
            }),
            deliveries: store.clone(),
            bus: bus.clone(),
            ingest: Arc::new(Ingestor::new(
                store.clone(),
                bus.clone(),
                settings.database.acquire_timeout,
            )),
            time_window: settings.ingest.time_window(),
        };
        let options = crate::api::ApiOptions {
            max_body_bytes: settings.api.max_body_bytes,
        };
        let listener = tokio::net::TcpListener::bind(settings.api.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for the admin API on {} (api.listen)",
                    settings.api.listen
                )
            })?;
        tracing::info!(addr = %settings.api.listen, "admin API ready");
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, crate::api::router(state, options))
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .context("admin API failed")
        });
    }
    {
        // Every process chains the audit entries its roles (and others) record.
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            seal_audit_until(&store, &shutdown).await;
            Ok(())
        });
    }
    tracing::info!(roles = ?roles, "renkei is up");
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                return Err(anyhow::anyhow!("a role stopped unexpectedly: {e}"));
            }
        }
    }
    // Every role has stopped: nothing writes any more.
    store.close().await;
    Ok(())
}

/// Chains pending audit entries every few milliseconds until `shutdown`, then once more.
async fn seal_audit_until(store: &Arc<dyn Store>, shutdown: &CancellationToken) {
    let full = usize::try_from(SEAL_BATCH).unwrap_or(usize::MAX);
    loop {
        let pause = match store.seal_audit(SEAL_BATCH).await {
            Ok(n) if n >= full => continue,
            Ok(_) => std::time::Duration::from_millis(20),
            Err(e) => {
                tracing::warn!(error = %e, "cannot chain audit entries now; they wait");
                std::time::Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = crate::store::seal_all(store.as_ref()).await {
        tracing::warn!(error = %e, "audit entries left to the next sealer");
    }
}

/// The admin store as the API sees it: a registry document is applied only when its
/// endpoint URLs point at destinations `delivery.allowed_destinations` allows (the
/// check `renkei admin apply` makes too); refused, the API answers 422 naming each
/// endpoint. Everything else goes straight to the store.
struct GuardedAdmin {
    store: Arc<dyn Store>,
    destinations: DestinationPolicy,
}

#[async_trait::async_trait]
impl AdminStore for GuardedAdmin {
    async fn apply_registry(
        &self,
        doc: &RegistryDocument,
        actor: &str,
    ) -> Result<Vec<Change>, StoreError> {
        doc.validate_for(&self.destinations)
            .await
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        AdminStore::apply_registry(self.store.as_ref(), doc, actor).await
    }
    async fn export_registry(&self) -> Result<RegistryDocument, StoreError> {
        AdminStore::export_registry(self.store.as_ref()).await
    }
    async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        AdminStore::list_deliveries(self.store.as_ref(), filter).await
    }
    async fn list_rejected(
        &self,
        filter: &crate::store::RejectedFilter,
    ) -> Result<Vec<crate::store::RejectedSummary>, StoreError> {
        AdminStore::list_rejected(self.store.as_ref(), filter).await
    }
    async fn rejected_input(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<crate::store::RejectedInput>, StoreError> {
        AdminStore::rejected_input(self.store.as_ref(), id).await
    }
    async fn mark_rejected_replayed(
        &self,
        id: uuid::Uuid,
        event: uuid::Uuid,
        actor: &str,
    ) -> Result<bool, StoreError> {
        AdminStore::mark_rejected_replayed(self.store.as_ref(), id, event, actor).await
    }
    async fn create_api_key(&self, name: &str, key_sha256: &[u8]) -> Result<String, StoreError> {
        AdminStore::create_api_key(self.store.as_ref(), name, key_sha256).await
    }
    async fn create_source_key(
        &self,
        name: &str,
        facility: &str,
        key_sha256: &[u8],
    ) -> Result<String, StoreError> {
        AdminStore::create_source_key(self.store.as_ref(), name, facility, key_sha256).await
    }
    async fn find_source_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        AdminStore::find_source_key(self.store.as_ref(), key_sha256).await
    }
    async fn find_api_key(&self, key_sha256: &[u8]) -> Result<Option<String>, StoreError> {
        AdminStore::find_api_key(self.store.as_ref(), key_sha256).await
    }
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        AdminStore::audit(self.store.as_ref(), entries).await
    }
    async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        AdminStore::audit_rows(self.store.as_ref(), after, limit).await
    }
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        AdminStore::audit_head(self.store.as_ref()).await
    }
    async fn seal_audit(&self, max: i64) -> Result<usize, StoreError> {
        AdminStore::seal_audit(self.store.as_ref(), max).await
    }
    async fn close(&self) {
        AdminStore::close(self.store.as_ref()).await
    }
    async fn event(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<(Option<String>, serde_json::Value)>, StoreError> {
        AdminStore::event(self.store.as_ref(), id).await
    }
}
