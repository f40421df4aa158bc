//! One owner per partition: membership and partition leases in a JetStream KV bucket. The
//! processor leases its partitions; the alert manager leases its single "partition" (one
//! active manager, the others standing by).
//!
//! Every process of a group heartbeats `member.<group>.<member>` and holds the partitions it
//! owns as `lease.<group>.<partition>`. The bucket's `max_age` is the lease
//! TTL: an entry not renewed for that long disappears on the server, so a killed owner's
//! partitions are free again after one TTL and the others take them over. Renewals are
//! compare-and-set on the entry's revision, so a paused owner that comes back finds its lease
//! gone and stops. Locally an owner stops publishing and acking once its last renewal is a TTL
//! old (minus a margin), before the server can hand the lease to someone else.
//!
//! Assignment is deterministic: members sorted by id, partition `p` is preferred by member
//! `p mod members`; an owner releases (gracefully: checkpoint first) what another live member
//! prefers, and takes free partitions it prefers, or any that stayed free for a while.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::subjects;

/// A lease operation failed in a way that may pass (NATS unreachable, a timeout); a lease
/// taken by someone else is not an error but an answer (`None`, [`LeaseGuard::lost`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LeaseError(pub String);

fn nats<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> LeaseError {
    move |e: E| LeaseError(format!("{what}: {e}"))
}

/// What an owner knows of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    /// Publishing and acking are allowed until then.
    ValidUntil(Instant),
    /// Another process may own the partition now: stop without publishing anything more.
    Lost,
}

/// Why [`LeaseGuard::wait_valid`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// The partition's lease is lost.
    Lost(u32),
    /// Shutdown was asked meanwhile.
    Stopped,
}

/// Held by a partition's runner: may it still publish and ack?
#[derive(Clone)]
pub struct LeaseGuard {
    partition: u32,
    state: watch::Receiver<LeaseState>,
    /// Keeps the state alive for a guard without a keeper ([`LeaseGuard::always`]).
    _owner: Option<std::sync::Arc<watch::Sender<LeaseState>>>,
}

/// The keeper's side of a [`LeaseGuard`].
pub struct LeaseHandle {
    pub partition: u32,
    pub revision: u64,
    state: watch::Sender<LeaseState>,
}

impl LeaseHandle {
    pub fn new(partition: u32, revision: u64, valid_until: Instant) -> (Self, LeaseGuard) {
        let (tx, rx) = watch::channel(LeaseState::ValidUntil(valid_until));
        (
            Self {
                partition,
                revision,
                state: tx,
            },
            LeaseGuard {
                partition,
                state: rx,
                _owner: None,
            },
        )
    }

    /// A renewal succeeded: valid until then.
    pub fn extend(&mut self, revision: u64, valid_until: Instant) {
        self.revision = revision;
        self.state.send_replace(LeaseState::ValidUntil(valid_until));
    }

    /// Another guard on the same lease (a partition restarted under it, e.g. after a reload).
    pub fn guard(&self) -> LeaseGuard {
        LeaseGuard {
            partition: self.partition,
            state: self.state.subscribe(),
            _owner: None,
        }
    }

    pub fn is_lost(&self) -> bool {
        *self.state.borrow() == LeaseState::Lost
    }

    pub fn lose(&self) {
        self.state.send_replace(LeaseState::Lost);
    }
}

impl LeaseGuard {
    /// A guard that never expires, for a processor that owns its partition by construction
    /// (replay, tests).
    pub fn always(partition: u32) -> Self {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        let (tx, rx) = watch::channel(LeaseState::ValidUntil(far));
        Self {
            partition,
            state: rx,
            _owner: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Returns once publishing is allowed: at once while the lease is valid; after a renewal
    /// when it has lapsed (e.g. NATS was unreachable); an error when it is lost or on shutdown.
    pub async fn wait_valid(&self, stop: &CancellationToken) -> Result<(), Lapse> {
        let mut rx = self.state.clone();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                LeaseState::Lost => return Err(Lapse::Lost(self.partition)),
                LeaseState::ValidUntil(t) if t > Instant::now() => return Ok(()),
                LeaseState::ValidUntil(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(Lapse::Stopped),
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(Lapse::Lost(self.partition));
                    }
                }
            }
        }
    }

    /// Resolves when the lease is lost (or its keeper is gone).
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        loop {
            if *rx.borrow_and_update() == LeaseState::Lost {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The group as the bucket shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Live members, sorted.
    pub members: Vec<String>,
    /// Partition → owning member.
    pub owners: BTreeMap<u32, String>,
}

/// What a member should do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub acquire: Vec<u32>,
    pub release: Vec<u32>,
}

/// The member that should own `partition`.
pub fn preferred(partition: u32, members: &[String]) -> Option<&str> {
    if members.is_empty() {
        None
    } else {
        Some(&members[partition as usize % members.len()])
    }
}

/// Decides what `me` acquires and releases. `free_too_long`: partitions free for so long that
/// anyone may take them (their preferred member is not doing so).
pub fn plan(
    partitions: u32,
    me: &str,
    view: &View,
    owned: &BTreeSet<u32>,
    free_too_long: &BTreeSet<u32>,
) -> Plan {
    let mut out = Plan::default();
    for p in 0..partitions {
        let pref = preferred(p, &view.members);
        if owned.contains(&p) {
            if pref.is_some_and(|m| m != me) {
                out.release.push(p);
            }
        } else if !view.owners.contains_key(&p)
            && (pref == Some(me) || pref.is_none() || free_too_long.contains(&p))
        {
            out.acquire.push(p);
        }
    }
    out
}

/// Membership and leases of one processor group in the KV bucket.
pub struct Leases {
    kv: kv::Store,
    group: String,
    pub member: String,
    pub ttl: Duration,
}

impl Leases {
    /// Opens (creating if needed) the bucket; its `max_age` is the lease TTL.
    pub async fn open(
        js: &jetstream::Context,
        group: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        let kv = match js.get_key_value(subjects::LEASE_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: subjects::LEASE_BUCKET.to_string(),
                    description:
                        "PrismWatch membership and leases (partitions, the active alert manager)"
                            .into(),
                    history: 1,
                    max_age: ttl,
                    ..Default::default()
                })
                .await
            {
                Ok(kv) => kv,
                // Created meanwhile by another member (or another component of this process).
                Err(e) => js
                    .get_key_value(subjects::LEASE_BUCKET)
                    .await
                    .map_err(|_| LeaseError(format!("create the lease bucket: {e}")))?,
            },
        };
        // An existing bucket's TTL wins (every member must agree on it).
        let ttl = match kv.status().await {
            Ok(status) if !status.max_age().is_zero() => status.max_age(),
            _ => ttl,
        };
        Ok(Self {
            kv,
            group: group.to_string(),
            member: member.to_string(),
            ttl,
        })
    }

    fn member_key(&self) -> String {
        format!("member.{}.{}", self.group, self.member)
    }

    fn lease_key(&self, partition: u32) -> String {
        format!("lease.{}.{partition}", self.group)
    }

    /// How long after a renewal was *sent* it may be relied on: the TTL less a margin, so the
    /// owner stops before the server can expire the entry (which counts from when it stored it).
    pub fn valid_for(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }

    pub async fn heartbeat(&self) -> Result<(), LeaseError> {
        self.kv
            .put(self.member_key(), self.member.clone().into())
            .await
            .map(|_| ())
            .map_err(nats("heartbeat"))
    }

    /// Takes a free partition; `None` when someone holds it.
    pub async fn acquire(&self, partition: u32) -> Result<Option<u64>, LeaseError> {
        match self
            .kv
            .create(self.lease_key(partition), self.member.clone().into())
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(LeaseError(format!("acquire partition {partition}: {e}"))),
        }
    }

    /// Renews a lease held at `revision`; `None` when it is no longer ours.
    pub async fn renew(&self, partition: u32, revision: u64) -> Result<Option<u64>, LeaseError> {
        match self
            .kv
            .update(
                self.lease_key(partition),
                self.member.clone().into(),
                revision,
            )
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(LeaseError(format!("renew partition {partition}: {e}"))),
        }
    }

    /// Gives a lease up (only if still ours), so another member takes it at once.
    pub async fn release(&self, partition: u32, revision: u64) {
        if let Err(e) = self
            .kv
            .delete_expect_revision(self.lease_key(partition), Some(revision))
            .await
        {
            tracing::debug!(partition, error = %e, "lease release failed (it expires by itself)");
        }
    }

    /// Leaves the group (on shutdown): others see it gone at once.
    pub async fn leave(&self) {
        let _ = self.kv.delete(self.member_key()).await;
    }

    /// The live members and the partition owners.
    pub async fn view(&self) -> Result<View, LeaseError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(nats("list the lease bucket"))?;
        let member_prefix = format!("member.{}.", self.group);
        let lease_prefix = format!("lease.{}.", self.group);
        let mut view = View::default();
        let mut lease_keys = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(nats("list the lease bucket"))?;
            if let Some(m) = k.strip_prefix(&member_prefix) {
                view.members.push(m.to_string());
            } else if let Some(p) = k.strip_prefix(&lease_prefix).and_then(|p| p.parse().ok()) {
                lease_keys.push((p, k));
            }
        }
        for (p, k) in lease_keys {
            if let Some(v) = self.kv.get(k).await.map_err(nats("read a lease"))? {
                view.owners
                    .insert(p, String::from_utf8_lossy(&v).into_owned());
            }
        }
        view.members.sort();
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(members: &[&str], owners: &[(u32, &str)]) -> View {
        View {
            members: members.iter().map(|m| m.to_string()).collect(),
            owners: owners.iter().map(|(p, m)| (*p, m.to_string())).collect(),
        }
    }

    #[test]
    fn a_lone_member_takes_every_partition() {
        let p = plan(
            4,
            "a",
            &view(&["a"], &[]),
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert_eq!(p.acquire, [0, 1, 2, 3]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_new_member_gets_its_share_handed_over() {
        let owned: BTreeSet<u32> = (0..4).collect();
        let all_a = [(0, "a"), (1, "a"), (2, "a"), (3, "a")];
        // b joined: a releases b's preferred partitions, b waits for them to be free.
        let pa = plan(4, "a", &view(&["a", "b"], &all_a), &owned, &BTreeSet::new());
        assert_eq!(pa.release, [1, 3]);
        assert!(pa.acquire.is_empty());
        let pb = plan(
            4,
            "b",
            &view(&["a", "b"], &all_a),
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert!(pb.acquire.is_empty());
        // Released: b takes them.
        let pb = plan(
            4,
            "b",
            &view(&["a", "b"], &[(0, "a"), (2, "a")]),
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert_eq!(pb.acquire, [1, 3]);
    }

    #[test]
    fn partitions_of_a_dead_member_are_taken_over() {
        // c died: its member key and leases expired; a and b share its partitions.
        let v = view(&["a", "b"], &[(0, "a"), (1, "b"), (3, "b")]);
        let owned_a: BTreeSet<u32> = [0].into();
        let pa = plan(6, "a", &v, &owned_a, &BTreeSet::new());
        assert_eq!(pa.acquire, [2, 4]);
        // A free partition whose preferred member does not take it is taken by anyone.
        let pa = plan(6, "a", &v, &owned_a, &[5].into());
        assert_eq!(pa.acquire, [2, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_lapses_waits_for_renewal_and_stops_when_lost() {
        let stop = CancellationToken::new();
        let (mut handle, guard) = LeaseHandle::new(0, 1, Instant::now() + Duration::from_secs(4));
        guard.wait_valid(&stop).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let waiting = tokio::spawn({
            let (guard, stop) = (guard.clone(), stop.clone());
            async move { guard.wait_valid(&stop).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiting.is_finished(),
            "a lapsed lease must not allow publishing"
        );
        handle.extend(2, Instant::now() + Duration::from_secs(4));
        waiting.await.unwrap().unwrap();
        handle.lose();
        assert_eq!(guard.wait_valid(&stop).await, Err(Lapse::Lost(0)));
        guard.lost().await;
    }
}
