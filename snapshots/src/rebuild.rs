//! The ledger as of any point of its log: the best snapshot at or before that point, plus the
//! commits after it, applied by the shard state machine itself (one shard that owns every id,
//! or, to keep a window, the engine's shards). The snapshot actor, `kizo-snapshot create` and
//! `restore` all come through here.

use std::sync::Arc;

use kizo_engine::image::of_this_log;
use kizo_engine::shard::ShardState;
use kizo_engine::wal::{Wal, WalError};
use kizo_engine::LedgerImage;

use crate::dir::{Disk, Skipped, SnapshotDir, SnapshotError};

/// How far to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The log's last durable commit.
    Latest,
    /// Up to and including this commit.
    Lsn(u64),
    /// Every commit whose timestamps are all at or before this time (ns since the epoch).
    Time(u64),
}

/// Where to start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The newest valid snapshot at or before the target.
    BestSnapshot,
    /// LSN 1: the log alone, ignoring every snapshot.
    LogOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error("LSN {lsn} is past the end of the log ({last})")]
    PastTheEnd { lsn: u64, last: u64 },
}

/// What the rebuilt image keeps of history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Every transfer: an image any engine loads, whose size grows with history.
    Everything,
    /// What `shard_count` shards keeping `window` transfers in all keep, once the store holds
    /// the log up to `stored_lsn`: accounts, pending transfers, the window and the filters.
    Window {
        shard_count: usize,
        window: usize,
        stored_lsn: u64,
    },
}

/// A rebuilt ledger, and how it was got.
#[derive(Debug)]
pub struct Rebuilt {
    pub image: LedgerImage,
    /// The snapshot started from, if any.
    pub base: Option<String>,
    /// Commits applied after it.
    pub replayed: u64,
    /// Snapshots passed over (damaged, or not of this log).
    pub skipped: Vec<Skipped>,
}

/// Commits read from the log at once: at most 64 × 8,189 records in memory (about 70 MB),
/// besides what the shards keep.
const COMMITS_PER_READ: u64 = 64;

/// Rebuilds the ledger as of `target`. `progress(done, total)` is called after each batch of
/// commits. CPU work runs on tokio's blocking threads, so that a running server's request
/// workers are not held.
pub async fn rebuild<D: Disk + 'static>(
    dir: Option<Arc<SnapshotDir<D>>>,
    wal: &dyn Wal,
    target: Target,
    base: Base,
    retention: Retention,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, RebuildError> {
    let last = wal.last_lsn();
    let upper = match target {
        Target::Lsn(lsn) if lsn > last => return Err(RebuildError::PastTheEnd { lsn, last }),
        Target::Lsn(lsn) => lsn,
        Target::Latest | Target::Time(_) => last,
    };
    let mut skipped = Vec::new();
    let mut start = None;
    if let (Some(dir), Base::BestSnapshot) = (dir, base) {
        // Which snapshots could serve: at or before the target, and of this log (its commit at
        // the snapshot's LSN has the snapshot's timestamp), checked against the log first.
        let mut belongs = std::collections::HashMap::new();
        for listed in dir.list()? {
            let Ok(manifest) = &listed.manifest else {
                continue;
            };
            if manifest.lsn == 0 || manifest.lsn > upper {
                continue;
            }
            let commit = wal.read(manifest.lsn, manifest.lsn).await?;
            let of_this = of_this_log(
                manifest.lsn,
                manifest.timestamp_max,
                commit.first().map(|c| &**c),
            );
            belongs.insert(manifest.lsn, of_this);
        }
        let found = tokio::task::spawn_blocking(move || {
            dir.newest_valid(|manifest| {
                if manifest.lsn > upper {
                    return Err(format!("after the target LSN {upper}"));
                }
                if let Target::Time(time) = target {
                    if manifest.timestamp_max > time {
                        return Err("after the target time".into());
                    }
                }
                match belongs.get(&manifest.lsn) {
                    Some(true) => Ok(()),
                    _ => Err("not of this log: its LSN's commit has another timestamp".into()),
                }
            })
        })
        .await
        .expect("loading a snapshot never panics")?;
        skipped.extend(found.1);
        start = found.0;
    }
    let base_name = start
        .as_ref()
        .map(|(manifest, _)| crate::dir::snapshot_name(manifest.lsn));
    let image = start.map(|(_, image)| image).unwrap_or_default();
    let (shard_count, window, stored_lsn) = match retention {
        Retention::Everything => (1, None, 0),
        Retention::Window {
            shard_count,
            window,
            stored_lsn,
        } => (shard_count, Some((window / shard_count).max(1)), stored_lsn),
    };
    let build = move |image: &LedgerImage| {
        (0..shard_count)
            .map(|index| ShardState::from_image(index, shard_count, window, image))
            .collect::<Result<Vec<_>, _>>()
    };
    let empty = build(&LedgerImage::default()).expect("the empty image always adds up");
    let from_base = tokio::task::spawn_blocking(move || build(&image))
        .await
        .expect("rebuilding a shard never panics");
    // A snapshot that does not add up (or that left transfers to a store, for an image that
    // must hold every one) is passed over for the log alone.
    let (base_name, mut shards) = match (from_base, base_name) {
        (Ok(shards), name) => (name, shards),
        (Err(source), name) => {
            let name = name.expect("the empty image always adds up");
            skipped.push(Skipped {
                error: SnapshotError::Invalid {
                    name: name.clone(),
                    source,
                },
                name,
            });
            (None, empty)
        }
    };
    let from = shards[0].applied_lsn() + 1;
    let total = upper.saturating_sub(from - 1);
    let mut next = from;
    let mut replayed = 0;
    'replay: while next <= upper {
        let to = upper.min(next + COMMITS_PER_READ - 1);
        let commits = wal.read(next, to).await?;
        if commits.len() as u64 != to - next + 1 {
            return Err(WalError::Corrupt {
                lsn: next,
                detail: format!(
                    "asked for {} commits, read {}",
                    to - next + 1,
                    commits.len()
                ),
            }
            .into());
        }
        let cut = match target {
            Target::Time(time) => commits
                .iter()
                .position(|c| c.timestamp_max > time)
                .unwrap_or(commits.len()),
            _ => commits.len(),
        };
        let applied = cut as u64;
        let stopped = cut < commits.len();
        shards = tokio::task::spawn_blocking(move || {
            // Evicting after each commit keeps the shards at their window while they replay.
            for commit in &commits[..cut] {
                for shard in &mut shards {
                    shard.apply(commit);
                    shard.evict(stored_lsn);
                }
            }
            shards
        })
        .await
        .expect("applying a durable commit never panics");
        replayed += applied;
        next += applied;
        progress(replayed, total);
        if stopped {
            break 'replay;
        }
    }
    let image = tokio::task::spawn_blocking(move || ShardState::image_of(&shards))
        .await
        .expect("exporting never panics");
    Ok(Rebuilt {
        image,
        base: base_name,
        replayed,
        skipped,
    })
}
