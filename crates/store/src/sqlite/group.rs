//! Group commit for the one SQLite writer.
//!
//! Every state write is a transaction on the one writer connection, and with
//! `synchronous = FULL` every commit syncs the WAL and rewrites the B-tree pages the
//! transaction touched (interior pages included). At zero latency the pages in flight queue
//! for the writer: measured, a page's two writes spent 91 ms of its 102 ms waiting for it.
//!
//! So concurrent writes share a commit. A caller ([`GroupWriter::begin`]) takes the writer
//! (FIFO), joins the open transaction — or opens one with `BEGIN IMMEDIATE` — and runs its
//! statements inside a `SAVEPOINT`: a caller whose statements fail (or who drops its
//! [`WriteTx`]) rolls back its own savepoint only. [`WriteTx::commit`] leaves the savepoint
//! open (the next member's nests inside it; the group's `COMMIT` releases them all), hands the
//! writer on, and waits until the *group* is committed: a call that writes is still durable
//! when it returns. The committer is a task of its own that queues for the writer like any
//! caller once one asks for a commit, so every caller already waiting when a commit is asked
//! for joins the group, and a caller that comes later joins the next one. Each statement is a
//! round trip to the connection's thread while the writer is held, so a group opens with one
//! (`PRAGMA synchronous`, `BEGIN IMMEDIATE` and the first `SAVEPOINT` together) and a member
//! costs one more (`SAVEPOINT`) than its own statements.
//!
//! The connection is taken from the writer pool when a group opens and returned when it
//! commits (an in-memory database has one connection for readers and the writer alike, as
//! before).
//!
//! Each write says how it must survive ([`Durability`]). What is acknowledged to someone
//! outside the process (a webhook's 2xx, a broker's ack, a user's retry) is `Synced`: its
//! group commits with `synchronous = FULL` (the WAL is synced before the commit returns).
//! What the connector derives again from the DAM and the PIM (cursors, content hashes, codes,
//! the inbox's claims and completions, dead letters of polled assets) is `Ordered`: its group
//! commits with `synchronous = NORMAL`, which survives a crash of the process and, after a
//! power loss, may lose the last such commits — always a suffix: WAL frames carry a chained
//! checksum and recovery stops at the first frame that does not match, so a commit is never
//! kept without those before it (a cursor is never ahead of the hashes written before it). A
//! `Synced` commit syncs every frame before it too. SQLite refuses to change `synchronous`
//! inside a transaction, so a group has one durability: a `Synced` write that finds an
//! `Ordered` group open commits that group first and opens its own; an `Ordered` write joins
//! a `Synced` group.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Sqlite;
use tokio::sync::{watch, Mutex, Notify, OwnedMutexGuard};

use crate::error::is_transient_sqlx;

/// A group's outcome as every member gets it (`sqlx::Error` is not `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn of(e: &sqlx::Error) -> Self {
        Self {
            message: e.to_string(),
            transient: is_transient_sqlx(e),
        }
    }

    /// Back to a `sqlx::Error` that classifies the same way (transient or not).
    fn to_error(&self) -> sqlx::Error {
        let message = format!("group commit failed: {}", self.message);
        if self.transient {
            sqlx::Error::Io(std::io::Error::other(message))
        } else {
            sqlx::Error::Protocol(message)
        }
    }
}

type Outcome = Option<Result<(), Failure>>;

/// How a write must survive (see the module's documentation). Ordered from weaker to
/// stronger: a group may take writes that need less than it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Durability {
    /// Survives a crash of the process; a power loss may roll it back together with every
    /// write committed after it (`synchronous = NORMAL`). For state derived again from the DAM
    /// and the PIM.
    Ordered,
    /// Survives a power loss once the write returns (`synchronous = FULL`). For what is
    /// acknowledged to someone outside the process.
    Synced,
}

impl Durability {
    /// What opens a group of this durability with its first member's savepoint: one round
    /// trip to the connection's thread instead of three.
    fn open_group(self) -> &'static str {
        match self {
            Durability::Ordered => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE; SAVEPOINT member",
            Durability::Synced => "PRAGMA synchronous = FULL; BEGIN IMMEDIATE; SAVEPOINT member",
        }
    }
}

/// The open transaction and its members.
struct Group {
    conn: PoolConnection<Sqlite>,
    durability: Durability,
    /// Whether a member's savepoint is open (set while a member works; still set after a
    /// member dropped its [`WriteTx`] halfway, until the savepoint is rolled back).
    savepoint_open: bool,
    done: watch::Sender<Outcome>,
}

struct State {
    group: Option<Group>,
    /// Transactions committed (or failed to commit) so far.
    commits: u64,
    /// Of which `Synced` ones.
    synced_commits: u64,
    /// Whether a group failed to commit (shared with [`GroupWriter::has_failed`]).
    failed: Arc<AtomicBool>,
}

/// The writer: transactions of concurrent callers committed together.
pub(crate) struct GroupWriter {
    pool: SqlitePool,
    state: Arc<Mutex<State>>,
    wanted: Arc<Notify>,
    committer: tokio::task::JoinHandle<()>,
    failed: Arc<AtomicBool>,
}

impl GroupWriter {
    /// Starts the committer task (within a Tokio runtime).
    pub(crate) fn new(pool: SqlitePool) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            group: None,
            commits: 0,
            synced_commits: 0,
            failed: failed.clone(),
        }));
        let wanted = Arc::new(Notify::new());
        let committer = tokio::spawn(commit_groups(state.clone(), wanted.clone()));
        Self {
            pool,
            state,
            wanted,
            committer,
            failed,
        }
    }

    /// Whether a group has failed to commit since the writer started (its members' statements
    /// were rolled back after they were released: `WriteTx::release`).
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Makes [`has_failed`](Self::has_failed) true, as a failed COMMIT would (tests).
    #[cfg(test)]
    pub(crate) fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Transactions committed so far.
    #[cfg(test)]
    pub(crate) async fn commits(&self) -> u64 {
        self.state.lock().await.commits
    }

    /// `Synced` transactions committed so far.
    #[cfg(test)]
    pub(crate) async fn synced_commits(&self) -> u64 {
        self.state.lock().await.synced_commits
    }

    /// References to the writer's state while a member holds the writer: the writer's, the
    /// committer's and the holder's guard (callers waiting in `begin` add theirs).
    #[cfg(test)]
    pub(crate) fn holders(&self) -> usize {
        Arc::strong_count(&self.state)
    }

    /// Waits until `n` tasks spawned just before wait in the writer's queue, behind the member
    /// holding it (`before`: [`holders`](Self::holders) counted then). A caller in `begin` clones the state
    /// and joins the mutex's first-come-first-served queue in the same poll, so its reference
    /// shows it queued (a fixed sleep was not always long enough on a loaded machine).
    #[cfg(test)]
    pub(crate) async fn wait_queued(&self, before: usize, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let queued = self.holders() - before;
            if queued >= n {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queued} of {n} callers queued for the writer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The last one counted may still be between its clone and its place in the queue.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    /// The pool the writer's connection comes from.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Joins (or opens) the current transaction; the caller's statements run in a savepoint.
    /// A group open with a weaker `durability` than the caller's is committed first.
    pub(crate) async fn begin(&self, durability: Durability) -> Result<WriteTx, sqlx::Error> {
        let mut guard = self.state.clone().lock_owned().await;
        if let Some(g) = guard.group.as_mut() {
            if g.savepoint_open {
                // A member dropped its transaction halfway: undo its part.
                rollback_savepoint(&mut g.conn).await?;
                g.savepoint_open = false;
            }
        }
        if guard
            .group
            .as_ref()
            .is_some_and(|g| g.durability < durability)
        {
            // Its members are told the outcome as if the committer had committed it.
            commit_open(&mut guard).await;
        }
        match guard.group.as_mut() {
            None => {
                let mut conn = self.pool.acquire().await?;
                if let Err(e) = sqlx::query(durability.open_group())
                    .execute(&mut *conn)
                    .await
                {
                    // Whichever statement failed, the group holds nothing yet: leave the
                    // connection outside any transaction (an error here only says there was
                    // none).
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(e);
                }
                guard.group = Some(Group {
                    conn,
                    durability,
                    savepoint_open: true,
                    done: watch::channel(None).0,
                });
            }
            Some(g) => {
                if let Err(e) = sqlx::query("SAVEPOINT member").execute(&mut *g.conn).await {
                    // Nothing of the caller's is in the group; others may be.
                    self.wanted.notify_one();
                    return Err(e);
                }
                g.savepoint_open = true;
            }
        }
        Ok(WriteTx {
            guard: Some(guard),
            wanted: self.wanted.clone(),
        })
    }

    /// Stops the committer once the open group (if any) is committed.
    pub(crate) async fn close(&self) {
        // Behind every caller already waiting for the writer.
        let mut guard = self.state.lock().await;
        commit_open(&mut guard).await;
        self.committer.abort();
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        self.committer.abort();
    }
}

/// One caller's part of a group: statements run on the writer connection (`&mut *tx`).
/// Dropped without [`commit`](Self::commit): the caller's statements are rolled back.
pub(crate) struct WriteTx {
    guard: Option<OwnedMutexGuard<State>>,
    wanted: Arc<Notify>,
}

impl WriteTx {
    fn group(&self) -> &Group {
        self.guard
            .as_ref()
            .and_then(|g| g.group.as_ref())
            .expect("a member holds an open group")
    }

    fn group_mut(&mut self) -> &mut Group {
        self.guard
            .as_mut()
            .and_then(|g| g.group.as_mut())
            .expect("a member holds an open group")
    }

    /// Makes the caller's statements part of the group and waits until the group is
    /// committed: durable when this returns `Ok`.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.release().await?.committed().await
    }

    /// Makes the caller's statements part of the group, still holding the writer: what the
    /// caller records before [`Released::committed`] (which hands the writer on) follows the
    /// order of the writes. The group's COMMIT comes later; a failed COMMIT is reported by
    /// [`GroupWriter::has_failed`] whether or not the caller still waits.
    ///
    /// No statement runs: the member's savepoint stays open inside the group's transaction —
    /// a later member's `SAVEPOINT member` nests inside it, and `ROLLBACK TO member` undoes
    /// only the most recent one, that member's — until the group's `COMMIT` releases them all
    /// (a `RELEASE` per member was one more round trip to the connection's thread while
    /// holding the writer).
    pub(crate) async fn release(mut self) -> Result<Released, sqlx::Error> {
        let g = self.group_mut();
        g.savepoint_open = false;
        let done = g.done.subscribe();
        Ok(Released {
            guard: self.guard.take(),
            wanted: self.wanted.clone(),
            done,
        })
    }
}

/// A member whose statements are part of the group, holding the writer until
/// [`committed`](Self::committed) (or dropped: its statements are committed with the group all
/// the same).
pub(crate) struct Released {
    guard: Option<OwnedMutexGuard<State>>,
    wanted: Arc<Notify>,
    done: watch::Receiver<Outcome>,
}

impl Released {
    /// Hands the writer on and waits until the group is committed: durable when this returns
    /// `Ok`.
    pub(crate) async fn committed(mut self) -> Result<(), sqlx::Error> {
        drop(self.guard.take());
        self.wanted.notify_one();
        let outcome = self
            .done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)?
            .clone()
            .expect("waited for an outcome");
        outcome.map_err(|f| f.to_error())
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            self.wanted.notify_one();
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.group().conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.group_mut().conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            // Dropped holding the writer (an error, or the caller was cancelled): its
            // savepoint is still open. Whoever takes the writer next rolls it back; the
            // committer makes sure someone does.
            self.wanted.notify_one();
        }
    }
}

/// The committer: each time a commit is asked for, takes the writer behind the callers
/// already waiting for it and commits their group.
async fn commit_groups(state: Arc<Mutex<State>>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        let mut guard = state.lock().await;
        commit_open(&mut guard).await;
    }
}

/// Commits the open group, if any (rolling back a dropped member's savepoint first), tells its
/// members the outcome and returns the connection to the pool.
async fn commit_open(state: &mut State) {
    let Some(mut g) = state.group.take() else {
        return;
    };
    let mut outcome = Ok(());
    if g.savepoint_open {
        outcome = rollback_savepoint(&mut g.conn).await;
    }
    if outcome.is_ok() {
        outcome = sqlx::query("COMMIT").execute(&mut *g.conn).await.map(drop);
    }
    // After a failure, leave the connection outside any transaction; if even that fails,
    // close it so the pool opens a fresh one.
    if outcome.is_err() && sqlx::query("ROLLBACK").execute(&mut *g.conn).await.is_err() {
        drop(g.conn.detach());
    }
    state.commits += 1;
    if g.durability == Durability::Synced {
        state.synced_commits += 1;
    }
    if outcome.is_err() {
        state.failed.store(true, Ordering::Release);
    }
    g.done
        .send_replace(Some(outcome.map_err(|e| Failure::of(&e))));
}

/// Undoes the most recent member's statements (the innermost savepoint named `member`) and
/// drops its savepoint; the members before it keep theirs.
async fn rollback_savepoint(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("ROLLBACK TO member; RELEASE member")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    /// A writer over a fresh file database with table `t (x INTEGER PRIMARY KEY)`, and a
    /// separate reader pool (what another connection sees is what was committed).
    async fn setup(dir: &tempfile::TempDir) -> (GroupWriter, SqlitePool) {
        let file = SqliteConnectOptions::new()
            .filename(dir.path().join("g.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(file.clone())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(file)
            .await
            .unwrap();
        (GroupWriter::new(pool), reader)
    }

    async fn rows(reader: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(reader)
            .await
            .unwrap()
    }

    async fn insert(tx: &mut WriteTx, x: i64) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO t (x) VALUES (?1)")
            .bind(x)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_waiting_together_share_one_commit_and_see_it_done_when_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        let writer = Arc::new(writer);
        // The first member holds the writer while ten more queue for it.
        let mut first = writer.begin(Durability::Synced).await.unwrap();
        insert(&mut first, 0).await.unwrap();
        let before = writer.holders();
        let mut tasks = Vec::new();
        for x in 1..=10 {
            let (writer, reader) = (writer.clone(), reader.clone());
            tasks.push(tokio::spawn(async move {
                let mut tx = writer.begin(Durability::Synced).await.unwrap();
                insert(&mut tx, x).await.unwrap();
                tx.commit().await.unwrap();
                // Committed when `commit` returns: another connection sees the row.
                rows(&reader).await.contains(&x)
            }));
        }
        writer.wait_queued(before, 10).await;
        first.commit().await.unwrap();
        for t in tasks {
            assert!(
                t.await.unwrap(),
                "a member's row was not visible when commit returned"
            );
        }
        assert_eq!(rows(&reader).await, (0..=10).collect::<Vec<_>>());
        // The committer, asked by the first member, queued behind the ten: one commit for all.
        assert_eq!(writer.commits().await, 1);
    }

    async fn synchronous(tx: &mut WriteTx) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **tx)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_synced_write_commits_an_open_ordered_group_first_and_syncs_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        let writer = Arc::new(writer);
        let mut ordered = writer.begin(Durability::Ordered).await.unwrap();
        assert_eq!(
            synchronous(&mut ordered).await,
            1,
            "NORMAL in an ordered group"
        );
        insert(&mut ordered, 1).await.unwrap();
        let before = writer.holders();
        // A synced write queues for the writer (ahead of the committer, asked for below).
        let synced = {
            let (writer, reader) = (writer.clone(), reader.clone());
            tokio::spawn(async move {
                let mut tx = writer.begin(Durability::Synced).await.unwrap();
                let seen = rows(&reader).await;
                let level = synchronous(&mut tx).await;
                insert(&mut tx, 2).await.unwrap();
                tx.commit().await.unwrap();
                (seen, level)
            })
        };
        writer.wait_queued(before, 1).await;
        ordered.commit().await.unwrap();
        let (seen, level) = synced.await.unwrap();
        assert_eq!(
            seen,
            vec![1],
            "the ordered group was committed before the synced one opened"
        );
        assert_eq!(level, 2, "FULL in a synced group");
        assert_eq!(rows(&reader).await, vec![1, 2]);
        assert_eq!(writer.commits().await, 2);
        assert_eq!(writer.synced_commits().await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ordered_write_joins_an_open_synced_group() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        let writer = Arc::new(writer);
        let mut first = writer.begin(Durability::Synced).await.unwrap();
        insert(&mut first, 1).await.unwrap();
        let before = writer.holders();
        let ordered = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tx = writer.begin(Durability::Ordered).await.unwrap();
                let level = synchronous(&mut tx).await;
                insert(&mut tx, 2).await.unwrap();
                tx.commit().await.unwrap();
                level
            })
        };
        writer.wait_queued(before, 1).await;
        first.commit().await.unwrap();
        assert_eq!(ordered.await.unwrap(), 2, "it ran in the synced group");
        assert_eq!(rows(&reader).await, vec![1, 2]);
        assert_eq!(writer.commits().await, 1);
        assert_eq!(writer.synced_commits().await, 1);
        // Alone, an ordered write opens an ordered group.
        let mut tx = writer.begin(Durability::Ordered).await.unwrap();
        assert_eq!(synchronous(&mut tx).await, 1);
        insert(&mut tx, 3).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(writer.commits().await, 2);
        assert_eq!(writer.synced_commits().await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_member_rolls_back_only_its_own_statements() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        let writer = Arc::new(writer);
        let mut first = writer.begin(Durability::Synced).await.unwrap();
        insert(&mut first, 1).await.unwrap();
        let before = writer.holders();
        let failing = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tx = writer.begin(Durability::Synced).await.unwrap();
                insert(&mut tx, 2).await.unwrap();
                // A duplicate key: the caller gives up, dropping its transaction.
                insert(&mut tx, 1).await
            })
        };
        let last = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tx = writer.begin(Durability::Synced).await.unwrap();
                insert(&mut tx, 3).await.unwrap();
                tx.commit().await
            })
        };
        writer.wait_queued(before, 2).await;
        first.commit().await.unwrap();
        assert!(failing.await.unwrap().is_err());
        last.await.unwrap().unwrap();
        assert_eq!(
            rows(&reader).await,
            vec![1, 3],
            "the failing member's row 2 is gone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_that_cannot_open_fails_its_caller_and_the_next_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        sqlx::query("PRAGMA busy_timeout = 100")
            .execute(writer.pool())
            .await
            .unwrap();
        // Another connection holds the database's write lock: `BEGIN IMMEDIATE` is refused.
        let mut other = reader.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .unwrap();
        match writer.begin(Durability::Ordered).await {
            Err(e) => assert!(e.to_string().contains("locked"), "{e}"),
            Ok(_) => panic!("a group opened while another connection held the write lock"),
        }
        sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
        drop(other);
        // The writer's connection was left outside any transaction: the next group opens.
        let mut tx = writer.begin(Durability::Ordered).await.unwrap();
        insert(&mut tx, 5).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&reader).await, vec![5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_members_nest_their_savepoints_and_a_failing_one_undoes_only_its_own() {
        // Members release nothing: each one's savepoint stays open inside the group's
        // transaction until its COMMIT. 200 of them in one group, every tenth one failing
        // after its first statement.
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        let writer = Arc::new(writer);
        let commits = writer.commits().await;
        // The group's first member writes row 0 before any other starts: the key a failing
        // member repeats (members take the writer in no set order, so not one of theirs).
        let mut hold = writer.begin(Durability::Ordered).await.unwrap();
        insert(&mut hold, 0).await.unwrap();
        let before = writer.holders();
        let members: Vec<_> = (1..=200i64)
            .map(|x| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut tx = writer.begin(Durability::Ordered).await.unwrap();
                    insert(&mut tx, x).await.unwrap();
                    if x % 10 == 0 {
                        // A duplicate key (row 0): this member gives up.
                        return insert(&mut tx, 0).await;
                    }
                    tx.commit().await
                })
            })
            .collect();
        writer.wait_queued(before, 200).await;
        hold.commit().await.unwrap();
        for (x, m) in (1..=200i64).zip(members) {
            assert_eq!(m.await.unwrap().is_ok(), x % 10 != 0, "member {x}");
        }
        let expected: Vec<i64> = (0..=200).filter(|x| *x == 0 || x % 10 != 0).collect();
        assert_eq!(rows(&reader).await, expected);
        assert!(
            writer.commits().await - commits <= 3,
            "the members shared their commits"
        );
    }

    #[tokio::test]
    async fn a_member_dropped_alone_leaves_nothing_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, reader) = setup(&dir).await;
        {
            let mut tx = writer.begin(Durability::Synced).await.unwrap();
            insert(&mut tx, 7).await.unwrap();
        }
        // The committer closes the abandoned transaction: its row is not there, and the
        // connection is free for the next write (no transaction left open).
        let mut tx = writer.begin(Durability::Synced).await.unwrap();
        insert(&mut tx, 8).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&reader).await, vec![8]);
        writer.close().await;
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(writer.pool())
            .await
            .unwrap();
        assert_eq!(
            open, 1,
            "the writer's connection is back in its pool, usable"
        );
    }
}
