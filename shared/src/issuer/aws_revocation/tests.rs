use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::TimeZone;
use serde_json::Value;

use super::*;
use crate::clock::ManualClock;
use crate::denylist::DenyListStore;
use crate::store::memory::MemoryLeaseStore;

const ROLE: &str = "arn:aws:iam::123456789012:role/team/deploy";

/// IAM as the revoker sees it: the last document put per role, how many writes it took, and
/// optionally some writes that fail or are slow (so concurrent renders overlap).
#[derive(Debug, Default)]
struct FakeIam {
    documents: Mutex<HashMap<String, Value>>,
    writes: AtomicUsize,
    failures_left: AtomicUsize,
}

#[async_trait::async_trait]
impl RolePolicyWriter for FakeIam {
    async fn put(&self, role: &RoleRef, document: &str) -> Result<(), IssueError> {
        tokio::task::yield_now().await;
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(IssueError::Unavailable("Throttling".into()));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let document: Value = serde_json::from_str(document).expect("the policy is JSON");
        self.documents.lock().unwrap().insert(role.name.clone(), document);
        Ok(())
    }

    async fn delete(&self, role: &RoleRef) -> Result<(), IssueError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.documents.lock().unwrap().remove(&role.name);
        Ok(())
    }
}

impl FakeIam {
    /// The session names the role's policy denies.
    fn denied(&self, role: &str) -> Vec<String> {
        let documents = self.documents.lock().unwrap();
        let Some(document) = documents.get(role) else { return Vec::new() };
        let mut denied: Vec<String> = document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["Condition"]["StringLike"]["aws:userid"].as_array())
            .flatten()
            .map(|id| id.as_str().unwrap().trim_start_matches("*:").to_owned())
            .collect();
        denied.sort();
        denied
    }

    fn cutoff(&self, role: &str) -> Option<String> {
        let documents = self.documents.lock().unwrap();
        documents.get(role)?["Statement"]
            .as_array()?
            .iter()
            .find_map(|s| s["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str().map(str::to_owned))
    }
}

struct World {
    clock: Arc<ManualClock>,
    store: Arc<MemoryLeaseStore>,
    iam: Arc<FakeIam>,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()));
    let store = Arc::new(MemoryLeaseStore::new().with_clock(clock.clone()));
    World { clock, store, iam: Arc::new(FakeIam::default()) }
}

impl World {
    /// A revoker process (`owner` tells two processes apart in the role lock).
    fn revoker(&self, owner: &str) -> Arc<StsSessionRevoker> {
        Arc::new(StsSessionRevoker::new(self.iam.clone(), self.store.clone(), self.clock.clone(), owner))
    }
}

fn session(i: usize) -> String {
    format!("01SESSION{i:017}")
}

fn backend(session: &str) -> BackendRef {
    BackendRef::AwsSession { role_arn: ROLE.to_owned(), session_name: session.to_owned() }
}

async fn revoke(
    revoker: &StsSessionRevoker,
    backend: &BackendRef,
    expires_at: DateTime<Utc>,
    delivered: bool,
) -> Result<(), IssueError> {
    let issued = IssuedRef {
        lease_id: match backend {
            BackendRef::AwsSession { session_name, .. } => session_name,
            _ => unreachable!(),
        },
        backend,
        expires_at,
        max_expires_at: expires_at,
        delivered,
    };
    revoker.revoke(issued).await
}

/// The defect this design removes: revocations used to read the role's policy back from IAM,
/// edit it and write it, and IAM reads are eventually consistent, so a writer could start from
/// the version before the last write and drop a session already marked revoked. Now the list
/// lives in the lease store (conditional writes) and IAM is only written. Two revoker processes
/// revoke 40 sessions of one role at once (a bulk revoke racing a sweep): every one of them is
/// in the policy IAM ends with, and the writes were shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revocations_in_two_processes_lose_no_session_and_share_writes() {
    let w = world();
    let (a, b) = (w.revoker("process-a"), w.revoker("process-b"));
    let expires = w.clock.now() + TimeDelta::minutes(45);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let revoker = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { revoke(&revoker, &backend(&session(i)), expires, true).await }));
    }
    for task in tasks {
        task.await.unwrap().expect("revocation");
    }
    let mut expected: Vec<String> = (0..40).map(session).collect();
    expected.sort();
    assert_eq!(w.iam.denied("deploy"), expected, "IAM denies every revoked session");
    let stored = w.store.deny_list(&RoleRef::parse(ROLE).unwrap().key()).await.unwrap().unwrap();
    assert!(!stored.is_pending(), "IAM holds the newest list");
    assert_eq!(stored.list.sessions().len(), 40);
    let writes = w.iam.writes.load(Ordering::SeqCst);
    assert!(writes < 40, "renders are shared: {writes} IAM writes for 40 revocations");
}

#[tokio::test]
async fn a_failed_write_leaves_the_list_pending_until_the_next_sweep_writes_it() {
    let w = world();
    let revoker = w.revoker("revoker-1");
    w.iam.failures_left.store(1, Ordering::SeqCst);
    let expires = w.clock.now() + TimeDelta::minutes(30);
    let err = revoke(&revoker, &backend(&session(1)), expires, true).await.unwrap_err();
    assert!(matches!(err, IssueError::Unavailable(_)), "{err}");
    assert!(w.iam.denied("deploy").is_empty());
    let pending = w.store.pending_deny_lists(10).await.unwrap();
    assert_eq!(pending.len(), 1, "the entry is recorded and waits for IAM");
    // The next sweep's catch-up writes it, whether or not the lease is retried.
    assert!(revoker.catch_up().await.is_empty());
    assert_eq!(w.iam.denied("deploy"), vec![session(1)]);
    assert!(w.store.pending_deny_lists(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_never_handed_out_or_already_over_get_no_entry() {
    let w = world();
    let revoker = w.revoker("revoker-1");
    let now = w.clock.now();
    // Issuance failed (or crashed before the caller got the credentials): nobody holds them.
    revoke(&revoker, &backend(&session(1)), now + TimeDelta::minutes(30), false).await.unwrap();
    // Expired already: STS ended it.
    revoke(&revoker, &backend(&session(2)), now - TimeDelta::seconds(1), true).await.unwrap();
    assert_eq!(w.iam.writes.load(Ordering::SeqCst), 0);
    assert!(w.store.deny_list(&RoleRef::parse(ROLE).unwrap().key()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_cutoff_recorded_by_the_lease_api_reaches_iam_with_the_next_sweep() {
    let w = world();
    let role = RoleRef::parse(ROLE).unwrap();
    let before = w.clock.now();
    // The API function: no IAM access, only the store.
    crate::denylist::request_cutoff(w.store.as_ref(), &role, before).await.unwrap();
    assert!(w.iam.cutoff("deploy").is_none());
    // The revoker function, at the start of its sweep.
    let revoker = w.revoker("revoker-1");
    assert!(revoker.catch_up().await.is_empty());
    assert_eq!(w.iam.cutoff("deploy").as_deref(), Some("2026-11-25T12:00:00Z"));
    // Twelve hours later no session can predate it: the next write prunes it.
    w.clock.advance(TimeDelta::hours(13));
    revoke(&revoker, &backend(&session(4)), w.clock.now() + TimeDelta::minutes(30), true).await.unwrap();
    assert!(w.iam.cutoff("deploy").is_none(), "an expired cut-off is not written again");
    assert_eq!(w.iam.denied("deploy"), vec![session(4)]);
}

#[tokio::test]
async fn two_spellings_of_one_role_share_one_list() {
    let w = world();
    let revoker = w.revoker("revoker-1");
    let expires = w.clock.now() + TimeDelta::minutes(30);
    revoke(&revoker, &backend(&session(1)), expires, true).await.unwrap();
    let other_path = BackendRef::AwsSession {
        role_arn: "arn:aws:iam::123456789012:role/deploy".to_owned(),
        session_name: session(2),
    };
    revoke(&revoker, &other_path, expires, true).await.unwrap();
    assert_eq!(w.iam.denied("deploy"), vec![session(1), session(2)], "one policy, both sessions");
}

/// One holder's revocations can fill the role's inline policy; the fallback then denies every
/// session of the role. Operators hear of it before (nearly full) and when it happens.
#[tokio::test]
async fn a_filling_deny_list_is_reported_before_and_when_it_falls_back() {
    let w = world();
    let metrics = Arc::new(crate::metrics::MemoryMetrics::default());
    let revoker = StsSessionRevoker::new(w.iam.clone(), w.store.clone(), w.clock.clone(), "p1")
        .with_max_policy_chars(1_000)
        .with_metrics(metrics.clone());
    let expires_at = w.clock.now() + TimeDelta::hours(1);
    let mut added = 0;
    while metrics.get("DenyListNearlyFull") == 0 {
        revoke(&revoker, &backend(&session(added)), expires_at, true).await.unwrap();
        added += 1;
        assert!(added < 100, "never reported as nearly full");
    }
    assert_eq!(metrics.get("DenyListFallbacks"), 0, "reported before the fallback");
    while metrics.get("DenyListFallbacks") == 0 {
        revoke(&revoker, &backend(&session(added)), expires_at, true).await.unwrap();
        added += 1;
        assert!(added < 200, "never fell back");
    }
    assert!(w.iam.cutoff("deploy").is_some(), "the fallback is a cut-off of the whole role");
}
