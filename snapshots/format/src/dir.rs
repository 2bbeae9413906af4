//! Snapshots on a disk: one folder per snapshot, `lsn-<LSN>`, holding the parts and the
//! manifest. The order of writes makes a snapshot appear whole or not at all:
//!
//! 1. every part into `tmp-<LSN>-<n>/`, each file fsync'd;
//! 2. `manifest.json` into the same folder, fsync'd; then the folder fsync'd;
//! 3. the folder renamed to `lsn-<LSN>`; then the parent folder fsync'd.
//!
//! A crash before 3 leaves a `tmp-` folder, which is never read and is removed at the next
//! start; after 3 the snapshot is complete. Reading checks every byte against the manifest
//! (see [`crate::format`]) and the ledger's invariants, and a snapshot that fails is reported
//! and passed over for the one before it.
//!
//! The file system is behind [`Disk`], so that the simulator can crash in the middle of these
//! steps and run exactly this code over what is left.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kizo_ledger::{ImageError, LedgerImage};
use rkyv::util::AlignedVec;

use crate::format::{self, FormatError, Manifest, MANIFEST, MANIFEST_BYTES_MAX};

/// The file operations snapshots need, with their durability spelled out.
pub trait Disk: Send + Sync {
    /// The names in `dir` (none when it does not exist).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// A whole file, refused when longer than `limit` bytes.
    fn read(&self, path: &Path, limit: u64) -> io::Result<AlignedVec>;
    /// A whole part file, as [`Disk::read`] reads it unless the disk can do better.
    fn read_part(&self, path: &Path, limit: u64) -> io::Result<PartBytes> {
        self.read(path, limit).map(PartBytes::Read)
    }
    /// Creates `path` (it must not exist), writes `bytes` and fsyncs the file.
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
}

/// A part file's bytes: read into memory, or held by the disk (a memory map is page-aligned,
/// so as aligned as `rkyv` needs).
pub enum PartBytes {
    Read(AlignedVec),
    /// Bytes the disk holds elsewhere (the real disk's memory map), read in place.
    Mapped(Box<dyn std::ops::Deref<Target = [u8]> + Send + Sync>),
}

impl std::ops::Deref for PartBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            PartBytes::Read(bytes) => bytes,
            PartBytes::Mapped(map) => map,
        }
    }
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {name}: {source}")]
    Format { name: String, source: FormatError },
    #[error("snapshot {name}: {source}")]
    Invalid { name: String, source: ImageError },
    #[error("no snapshot named {0}")]
    NotFound(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A snapshot found in the folder, with its manifest if that could be read.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub lsn: u64,
    pub manifest: Result<Manifest, SnapshotError>,
}

/// A snapshot read whole and checked.
pub type Loaded = (Manifest, LedgerImage);

/// A snapshot that was passed over, and why.
#[derive(Debug)]
pub struct Skipped {
    pub name: String,
    pub error: SnapshotError,
}

/// The largest part file read (a part holds at most what fits in memory anyway; this bounds
/// what a damaged length could make us allocate).
pub const PART_BYTES_MAX: u64 = 64 << 30;

/// A folder of snapshots.
pub struct SnapshotDir<D: Disk> {
    root: PathBuf,
    disk: D,
    /// Makes temporary names unique within this process.
    writes: AtomicU64,
}

const FINAL_PREFIX: &str = "lsn-";
const TEMP_PREFIX: &str = "tmp-";

/// The folder name of the snapshot at `lsn`.
pub fn snapshot_name(lsn: u64) -> String {
    format!("{FINAL_PREFIX}{lsn:020}")
}

fn lsn_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FINAL_PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl<D: Disk> SnapshotDir<D> {
    pub fn on(root: impl Into<PathBuf>, disk: D) -> Self {
        Self {
            root: root.into(),
            disk,
            writes: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Removes what unfinished writes left behind. Only for the folder's one writer, at start.
    pub fn remove_unfinished(&self) -> Result<Vec<String>, SnapshotError> {
        let mut removed = Vec::new();
        for name in self.disk.list(&self.root).map_err(io_error(&self.root))? {
            if name.starts_with(TEMP_PREFIX) {
                let path = self.path_of(&name);
                self.disk.remove_dir_all(&path).map_err(io_error(&path))?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            self.disk
                .sync_dir(&self.root)
                .map_err(io_error(&self.root))?;
        }
        Ok(removed)
    }

    /// Every complete snapshot, oldest first, with its manifest (or why it is unreadable).
    pub fn list(&self) -> Result<Vec<Listed>, SnapshotError> {
        let mut listed: Vec<Listed> = self
            .disk
            .list(&self.root)
            .map_err(io_error(&self.root))?
            .into_iter()
            .filter_map(|name| lsn_of(&name).map(|lsn| (name, lsn)))
            .map(|(name, lsn)| {
                let manifest = self.manifest(&name).and_then(|manifest| {
                    if manifest.lsn == lsn {
                        Ok(manifest)
                    } else {
                        Err(SnapshotError::Format {
                            name: name.clone(),
                            source: FormatError::Manifest(format!(
                                "LSN {}, the folder's name says {lsn}",
                                manifest.lsn
                            )),
                        })
                    }
                });
                Listed {
                    name,
                    lsn,
                    manifest,
                }
            })
            .collect();
        listed.sort_by_key(|l| l.lsn);
        Ok(listed)
    }

    /// The manifest of snapshot `name`.
    pub fn manifest(&self, name: &str) -> Result<Manifest, SnapshotError> {
        let path = self.path_of(name).join(MANIFEST);
        let bytes = match self.disk.read(&path, MANIFEST_BYTES_MAX) {
            Err(error) if error.kind() == io::ErrorKind::NotFound && lsn_of(name).is_none() => {
                return Err(SnapshotError::NotFound(name.into()))
            }
            other => other.map_err(io_error(&path))?,
        };
        format::parse_manifest(&bytes).map_err(|source| SnapshotError::Format {
            name: name.into(),
            source,
        })
    }

    /// Reads snapshot `name` whole: every file against the manifest, then the image's
    /// structure ([`LedgerImage::check_structure`]; the shards that build from it check the
    /// rest, and [`SnapshotDir::verify`] everything).
    pub fn load(&self, name: &str) -> Result<Loaded, SnapshotError> {
        if lsn_of(name).is_none() {
            return Err(SnapshotError::NotFound(name.into()));
        }
        let manifest = self.manifest(name)?;
        let folder = self.path_of(name);
        let parts = std::thread::scope(|scope| {
            let readers: Vec<_> = manifest
                .files
                .iter()
                .map(|file| {
                    let path = folder.join(&file.name);
                    scope.spawn(move || {
                        self.disk
                            .read_part(&path, PART_BYTES_MAX)
                            .map_err(io_error(&path))
                    })
                })
                .collect();
            readers
                .into_iter()
                .map(|reader| reader.join().expect("reading never panics"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let format_error = |source| SnapshotError::Format {
            name: name.into(),
            source,
        };
        let image = format::decode(&manifest, &parts).map_err(format_error)?;
        drop(parts);
        if lsn_of(name) != Some(image.lsn) {
            return Err(format_error(FormatError::Manifest(format!(
                "LSN {}, the folder's name says otherwise",
                image.lsn
            ))));
        }
        image
            .check_structure()
            .map_err(|source| SnapshotError::Invalid {
                name: name.into(),
                source,
            })?;
        Ok((manifest, image))
    }

    /// Reads snapshot `name` as [`SnapshotDir::load`] does, and checks every invariant of the
    /// ledger in it ([`LedgerImage::check`]).
    pub fn verify(&self, name: &str) -> Result<Loaded, SnapshotError> {
        let (manifest, image) = self.load(name)?;
        image.check().map_err(|source| SnapshotError::Invalid {
            name: name.into(),
            source,
        })?;
        Ok((manifest, image))
    }

    /// The newest snapshot that loads and that `usable` accepts; the ones passed over on the
    /// way (damaged, or refused by `usable`, with its reason) are returned too.
    pub fn newest_valid(
        &self,
        usable: impl Fn(&Manifest) -> Result<(), String>,
    ) -> Result<(Option<Loaded>, Vec<Skipped>), SnapshotError> {
        let mut skipped = Vec::new();
        for listed in self.list()?.into_iter().rev() {
            let refused = match &listed.manifest {
                Ok(manifest) => usable(manifest).err(),
                Err(_) => None,
            };
            if let Some(reason) = refused {
                skipped.push(Skipped {
                    error: SnapshotError::Format {
                        name: listed.name.clone(),
                        source: FormatError::Mismatch {
                            file: MANIFEST.into(),
                            detail: reason,
                        },
                    },
                    name: listed.name,
                });
                continue;
            }
            match self.load(&listed.name) {
                Ok(loaded) => return Ok((Some(loaded), skipped)),
                Err(error) => skipped.push(Skipped {
                    name: listed.name,
                    error,
                }),
            }
        }
        Ok((None, skipped))
    }

    /// Writes `image` as a snapshot in `shard_count` parts, atomically (see the module's
    /// documentation). A snapshot already there at the same LSN is replaced.
    pub fn write(
        &self,
        image: &LedgerImage,
        shard_count: u32,
        created_at: &str,
    ) -> Result<Manifest, SnapshotError> {
        let encoded = format::encode(image, shard_count, created_at);
        let name = snapshot_name(image.lsn);
        let write = self.writes.fetch_add(1, Ordering::Relaxed);
        let temp = self.path_of(&format!(
            "{TEMP_PREFIX}{:020}-{}-{write}",
            image.lsn,
            std::process::id()
        ));
        let root = &self.root;
        self.disk.create_dir_all(root).map_err(io_error(root))?;
        self.disk.create_dir_all(&temp).map_err(io_error(&temp))?;
        for (file, bytes) in &encoded.parts {
            let path = temp.join(file);
            self.disk.write(&path, bytes).map_err(io_error(&path))?;
        }
        let path = temp.join(MANIFEST);
        self.disk
            .write(&path, &encoded.manifest_bytes())
            .map_err(io_error(&path))?;
        self.disk.sync_dir(&temp).map_err(io_error(&temp))?;
        let target = self.path_of(&name);
        if self
            .disk
            .list(root)
            .map_err(io_error(root))?
            .contains(&name)
        {
            // Renaming over a folder fails; the old one is moved aside, then removed.
            let aside = self.path_of(&format!("{TEMP_PREFIX}replaced-{name}-{write}"));
            self.disk
                .rename(&target, &aside)
                .map_err(io_error(&target))?;
            self.disk.remove_dir_all(&aside).map_err(io_error(&aside))?;
        }
        self.disk.rename(&temp, &target).map_err(io_error(&temp))?;
        self.disk.sync_dir(root).map_err(io_error(root))?;
        Ok(encoded.manifest)
    }

    /// Removes all but the newest `keep` snapshots whose manifests read; returns the names
    /// removed. Unreadable ones older than the oldest kept go too. (Only manifests are read:
    /// a part damaged since is found at start-up, which then takes an older snapshot or the
    /// log alone.)
    pub fn prune(&self, keep: usize) -> Result<Vec<String>, SnapshotError> {
        assert!(keep >= 1, "pruning always keeps one snapshot");
        let listed = self.list()?;
        let mut kept = 0;
        let mut removed = Vec::new();
        for snapshot in listed.iter().rev() {
            if kept < keep {
                if snapshot.manifest.is_ok() {
                    kept += 1;
                }
                continue;
            }
            let path = self.path_of(&snapshot.name);
            self.disk.remove_dir_all(&path).map_err(io_error(&path))?;
            removed.push(snapshot.name.clone());
        }
        if !removed.is_empty() {
            self.disk
                .sync_dir(&self.root)
                .map_err(io_error(&self.root))?;
        }
        Ok(removed)
    }
}
