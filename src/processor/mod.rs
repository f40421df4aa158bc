//! The processor component: metric messages in, alert events out, one partition at a time.
//!
//! `PRISM_METRICS` is split into partitions by a hash of each subject's `<domain>.<source>`
//! (a stream subject transform, see `subjects/`). Each partition has one durable consumer, one
//! checkpoint and one lease; any number of processes of a group share the partitions, each
//! owned by exactly one of them at a time (`bus::lease`). The files, by job:
//!
//! | file | its job |
//! |---|---|
//! | `partition.rs` | one owned partition: recover, consume, process, publish, ack, checkpoint |
//! | `consume.rs` | the partition's consumer and the task that pulls batches |
//! | `worker.rs` | the pipeline thread (processing and checkpoint serialisation) |
//! | `publish.rs` | alert events and dead letters, retries, re-page suppression |
//! | `store.rs` | checkpoint objects |
//! | `replay.rs` | a stream range through fresh pipelines (the `replay` command) |

pub mod config;
pub(crate) mod consume;
mod error;
mod partition;
mod publish;
mod registry;
pub mod replay;
pub mod rulestats;
mod store;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::ProcessorConfig;
pub use consume::consumer_name;
pub use error::{ProcessorError, Retry};
pub use registry::series_id;
pub use store::CheckpointStore;

use crate::app::reload::Definitions;
use crate::app::status::StatusHandle;
use crate::bus::lease::{self, LeaseHandle, Leases};
use crate::config::Config;
use crate::rules::RuleSet;
use crate::telemetry;
use partition::Exit;

/// What every partition of a process shares.
pub struct ProcessorCtx {
    pub cfg: Config,
    /// Replaced by a reload; a partition takes the set current when it starts.
    rules: std::sync::RwLock<RuleSet>,
    pub js: jetstream::Context,
    pub status: StatusHandle,
    pub store: CheckpointStore,
    pub registry: registry::Registry,
    /// Points evaluated per rule by this process (stored for the API by `rulestats`).
    pub rule_counts: Arc<rulestats::RuleCounts>,
}

impl ProcessorCtx {
    /// The rules in force.
    pub fn rules(&self) -> RuleSet {
        self.rules.read().expect("rules lock").clone()
    }
}

/// A partition this process owns.
struct Owned {
    handle: LeaseHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<Exit, ProcessorError>>,
    releasing: bool,
    /// Stopped to start again at once under the same lease (new rules).
    restarting: bool,
}

/// The lease loop's state: what this process owns and what it saw of the others.
struct Keeper {
    ctx: Arc<ProcessorCtx>,
    leases: Leases,
    member: String,
    partitions: u32,
    renew: Duration,
    owned: BTreeMap<u32, Owned>,
    /// When each unowned partition was first seen free.
    free_since: BTreeMap<u32, Instant>,
    /// Partitions whose run failed: not taken again before then.
    retry_after: BTreeMap<u32, Instant>,
    warned_at: Option<Instant>,
}

impl Keeper {
    /// One round: heartbeat, renew, reap finished partitions, then release and acquire what
    /// the plan says.
    async fn round(&mut self, stop: &CancellationToken) {
        let sent = Instant::now();
        let joined = self.leases.heartbeat().await;
        self.ctx
            .status
            .update(|s| s.processor.joined = joined.is_ok());
        if let Err(e) = joined {
            if self
                .warned_at
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                tracing::warn!(error = %e, "cannot reach the lease bucket; owned partitions stop publishing once their leases lapse");
                self.warned_at = Some(Instant::now());
            }
            return;
        }
        // Renew first: a lease must not lapse while the rest of the round runs.
        for (p, o) in self.owned.iter_mut() {
            match self.leases.renew(*p, o.handle.revision).await {
                Ok(Some(rev)) => o.handle.extend(rev, sent + self.leases.valid_for()),
                Ok(None) => {
                    tracing::warn!(partition = p, "lease taken by another process");
                    o.handle.lose();
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal failed"),
            }
        }
        self.reap(stop).await;
        let view = match self.leases.view().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the group");
                return;
            }
        };
        let now = Instant::now();
        for p in 0..self.partitions {
            if view.owners.contains_key(&p) || self.owned.contains_key(&p) {
                self.free_since.remove(&p);
            } else {
                self.free_since.entry(p).or_insert(now);
            }
        }
        let grace = 3 * self.renew;
        let free_too_long: BTreeSet<u32> = self
            .free_since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > grace)
            .map(|(p, _)| *p)
            .collect();
        let mine: BTreeSet<u32> = self.owned.keys().copied().collect();
        let plan = lease::plan(self.partitions, &self.member, &view, &mine, &free_too_long);
        for p in plan.release {
            if let Some(o) = self.owned.get_mut(&p) {
                if !o.releasing {
                    tracing::info!(
                        partition = p,
                        "handing the partition over to its preferred member"
                    );
                    o.releasing = true;
                    o.stop.cancel();
                }
            }
        }
        for p in plan.acquire {
            if self.retry_after.get(&p).is_some_and(|t| *t > now) {
                continue;
            }
            let sent = Instant::now();
            match self.leases.acquire(p).await {
                Ok(Some(rev)) => {
                    let (handle, _) = LeaseHandle::new(p, rev, sent + self.leases.valid_for());
                    self.start(p, handle, stop);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(partition = p, error = %e, "acquire failed"),
            }
        }
    }

    /// Runs partition `p` under `handle`'s lease.
    fn start(&mut self, p: u32, handle: LeaseHandle, stop: &CancellationToken) {
        let part_stop = stop.child_token();
        let task = tokio::spawn(partition::run(
            self.ctx.clone(),
            p,
            handle.guard(),
            part_stop.clone(),
        ));
        self.owned.insert(
            p,
            Owned {
                handle,
                stop: part_stop,
                task,
                releasing: false,
                restarting: false,
            },
        );
    }

    /// New rules: every owned partition checkpoints and starts again with them.
    fn reload(&mut self, rules: RuleSet) {
        *self.ctx.rules.write().expect("rules lock") = rules;
        for o in self.owned.values_mut().filter(|o| !o.releasing) {
            o.restarting = true;
            o.stop.cancel();
        }
    }

    /// Collects finished partitions: releases the leases of those that stopped (or failed),
    /// restarts those stopped for a reload.
    async fn reap(&mut self, stop: &CancellationToken) {
        let finished: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, o)| o.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in finished {
            let o = self.owned.remove(&p).expect("listed");
            match o.task.await {
                Ok(Ok(Exit::Stopped)) if o.restarting && !o.handle.is_lost() => {
                    // Checkpointed with the old rules; the new run restores it (rule states
                    // are kept by rule name) and goes on from the same message.
                    tracing::info!(
                        partition = p,
                        "partition restarting with the reloaded rules"
                    );
                    self.start(p, o.handle, stop);
                }
                Ok(Ok(Exit::Stopped)) => self.leases.release(p, o.handle.revision).await,
                Ok(Ok(Exit::LeaseLost)) => {}
                Ok(Err(e)) => {
                    let wait = match e.retry() {
                        Retry::Transient => Duration::from_secs(2),
                        Retry::Permanent => Duration::from_secs(30),
                    };
                    tracing::error!(partition = p, error = %e, retry_in_secs = wait.as_secs(), "partition stopped with an error; giving it up for now");
                    self.leases.release(p, o.handle.revision).await;
                    self.retry_after.insert(p, Instant::now() + wait);
                }
                Err(join) => {
                    tracing::error!(partition = p, error = %join, "partition task panicked; giving it up for now");
                    self.leases.release(p, o.handle.revision).await;
                    self.retry_after
                        .insert(p, Instant::now() + Duration::from_secs(30));
                }
            }
        }
    }
}

/// Runs the processor until `stop`: joins the group, takes and gives back partitions, runs each
/// owned one. On stop, every partition finishes its in-flight work and checkpoints, then its
/// lease is released so the others take over at once.
pub async fn run(
    cfg: Config,
    mut defs: watch::Receiver<Arc<Definitions>>,
    js: jetstream::Context,
    status: StatusHandle,
    member: String,
    stop: CancellationToken,
) -> Result<(), ProcessorError> {
    let pc = cfg.processor.clone();
    let group = cfg.ingest.consumer_name.clone();
    let partitions = cfg.streams.partitions;
    let leases = Leases::open(&js, &group, &member, Duration::from_millis(pc.lease_ttl_ms)).await?;
    let ctx = Arc::new(ProcessorCtx {
        store: CheckpointStore::open(&js).await?,
        registry: registry::Registry::start(&js, stop.clone()).await?,
        cfg,
        rules: std::sync::RwLock::new(defs.borrow_and_update().rules.clone()),
        js,
        status: status.clone(),
        rule_counts: Arc::default(),
    });
    let nats = ctx.js.client();
    let stats_task = tokio::spawn(rulestats::publish(
        ctx.js.clone(),
        member.clone(),
        ctx.rule_counts.clone(),
        stop.clone(),
    ));
    // Each partition's families at 0 from the start (this process owns none of them yet).
    for p in 0..partitions {
        let part = p.to_string();
        for name in [
            telemetry::SERIES_ACTIVE,
            telemetry::CONSUMER_PENDING,
            telemetry::CHECKPOINT_SERIES,
        ] {
            metrics::gauge!(name, "partition" => part.clone()).increment(0.0);
        }
    }
    status.update(|s| {
        s.processor.enabled = true;
        s.processor.group = group.clone();
        s.processor.partitions_total = partitions;
    });
    tracing::info!(group = %group, member = %member, partitions, lease_ttl_ms = leases.ttl.as_millis() as u64, "processor joining its group");

    let mut keeper = Keeper {
        ctx,
        leases,
        member,
        partitions,
        renew: Duration::from_millis(pc.lease_renew_ms),
        owned: BTreeMap::new(),
        free_since: BTreeMap::new(),
        retry_after: BTreeMap::new(),
        warned_at: None,
    };
    let mut defs_open = true;
    let mut tick = tokio::time::interval(keeper.renew);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            changed = defs.changed(), if defs_open => {
                match changed {
                    Ok(()) => {
                        let rules = defs.borrow_and_update().rules.clone();
                        keeper.reload(rules);
                    }
                    Err(_) => defs_open = false,
                }
                continue;
            }
        }
        // A round waits on NATS; shutdown must not wait for it.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = keeper.round(&stop) => {}
        }
    }
    let Keeper {
        leases, mut owned, ..
    } = keeper;
    // Shutdown: every partition finishes and checkpoints (they saw `stop` too) while its lease
    // is still renewed; then the lease is released so another member takes over at once. Each
    // step is bounded: with NATS gone, shutdown must not wait for it.
    // With NATS away there is nothing to finish (no publish or ack can complete): a short wait.
    let connected = nats.connection_state() == async_nats::connection::State::Connected;
    let deadline = Instant::now() + Duration::from_secs(if connected { 8 } else { 5 });
    let step = |d: Duration| d.min(deadline.saturating_duration_since(Instant::now()));
    while !owned.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(step(Duration::from_millis(200))).await;
        let sent = Instant::now();
        let mut done = Vec::new();
        for (p, o) in owned.iter_mut() {
            if o.task.is_finished() {
                done.push(*p);
            } else if let Ok(Ok(Some(rev))) = tokio::time::timeout(
                step(Duration::from_millis(500)),
                leases.renew(*p, o.handle.revision),
            )
            .await
            {
                o.handle.extend(rev, sent + leases.valid_for());
            }
        }
        for p in done {
            let o = owned.remove(&p).expect("listed");
            if let Ok(Ok(Exit::Stopped)) = o.task.await {
                let _ = tokio::time::timeout(
                    step(Duration::from_millis(500)),
                    leases.release(p, o.handle.revision),
                )
                .await;
            }
        }
    }
    for p in owned.keys() {
        tracing::warn!(partition = p, "partition did not stop in time");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), leases.leave()).await;
    // The last counts (stored once more on stop within half a second; not with NATS away).
    let _ = tokio::time::timeout(Duration::from_secs(1), stats_task).await;
    Ok(())
}
