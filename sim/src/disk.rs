//! The simulated disk under snapshots: files and folders in memory behind the same
//! [`Disk`] trait the real snapshot folder uses, so that the production write, read, select
//! and prune code runs on it. Faults: the process dies after any number of operations (the
//! operation under way writes only part of its bytes), and at that power loss every folder
//! entry not yet made durable by `sync_dir` (a created file or folder, a rename) may be lost.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kizo_snapshot_format::dir::Disk;
use rkyv::util::AlignedVec;

use crate::rng::Rng;

#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    /// Operations left before the process dies; `None`: it does not.
    ops_left: Option<u64>,
    dead: bool,
    /// Folder entries not yet durable, oldest first.
    unsynced: Vec<Entry>,
}

enum Entry {
    Created(PathBuf),
    Renamed { from: PathBuf, to: PathBuf },
}

fn died() -> io::Error {
    io::Error::other("the process died")
}

fn under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

impl State {
    /// Counts one operation; `Err` once the process is dead. `Ok(false)`: this operation is
    /// the one cut short.
    fn tick(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(died());
        }
        match self.ops_left {
            Some(0) => {
                self.dead = true;
                Ok(false)
            }
            Some(n) => {
                self.ops_left = Some(n - 1);
                Ok(true)
            }
            None => Ok(true),
        }
    }

    fn move_tree(&mut self, from: &Path, to: &Path) {
        let moved = |p: &PathBuf| to.join(p.strip_prefix(from).expect("under the root"));
        let files: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| under(p, from))
            .cloned()
            .collect();
        for path in files {
            let bytes = self.files.remove(&path).expect("listed");
            self.files.insert(moved(&path), bytes);
        }
        let dirs: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|p| under(p, from))
            .cloned()
            .collect();
        for path in dirs {
            self.dirs.remove(&path);
            self.dirs.insert(moved(&path));
        }
    }

    fn remove_tree(&mut self, root: &Path) {
        self.files.retain(|p, _| !under(p, root));
        self.dirs.retain(|p| !under(p, root));
    }
}

impl SimDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("disk lock")
    }

    /// The process will die during the `ops`th operation from now.
    pub fn die_after(&self, ops: u64) {
        self.state().ops_left = Some(ops);
    }

    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// The process is gone and the machine restarts: every folder entry not made durable may
    /// be lost, each as `rng` decides; then the disk works again.
    pub fn power_loss(&self, rng: &mut Rng) -> u64 {
        let mut state = self.state();
        let mut lost = 0;
        let entries = std::mem::take(&mut state.unsynced);
        for entry in entries.into_iter().rev() {
            if rng.chance(500) {
                continue;
            }
            lost += 1;
            match entry {
                Entry::Created(path) => state.remove_tree(&path),
                Entry::Renamed { from, to } => state.move_tree(&to, &from),
            }
        }
        state.dead = false;
        state.ops_left = None;
        lost
    }

    /// Flips one bit of one stored file, if there is one; returns its path.
    pub fn rot(&self, rng: &mut Rng) -> Option<PathBuf> {
        let mut state = self.state();
        if state.files.is_empty() {
            return None;
        }
        let index = rng.below(state.files.len() as u64) as usize;
        let (path, bytes) = state.files.iter_mut().nth(index).expect("in range");
        if bytes.is_empty() {
            return None;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
        Some(path.clone())
    }
}

impl Disk for SimDisk {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        let child = |p: &PathBuf| {
            (p.parent() == Some(dir))
                .then(|| p.file_name().expect("named").to_string_lossy().into_owned())
        };
        let mut names: BTreeSet<String> = state.files.keys().filter_map(child).collect();
        names.extend(state.dirs.iter().filter_map(child));
        Ok(names.into_iter().collect())
    }

    fn read(&self, path: &Path, limit: u64) -> io::Result<AlignedVec> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        let bytes = state
            .files
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::other("too long"));
        }
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Ok(aligned)
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        let whole = state.tick()?;
        if state.files.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let written = if whole { bytes.len() } else { bytes.len() / 2 };
        state
            .files
            .insert(path.to_path_buf(), bytes[..written].to_vec());
        state.unsynced.push(Entry::Created(path.to_path_buf()));
        if whole {
            Ok(())
        } else {
            Err(died())
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        for ancestor in path.ancestors() {
            if ancestor.as_os_str().is_empty() || !state.dirs.insert(ancestor.to_path_buf()) {
                continue;
            }
            state.unsynced.push(Entry::Created(ancestor.to_path_buf()));
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        state.unsynced.retain(|entry| {
            let changed = match entry {
                Entry::Created(path) => path.as_path(),
                Entry::Renamed { to, .. } => to.as_path(),
            };
            changed.parent() != Some(dir)
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        if !state.dirs.contains(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if state.dirs.contains(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        state.move_tree(from, to);
        state.unsynced.push(Entry::Renamed {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.tick()?.then_some(()).ok_or_else(died)?;
        state.remove_tree(path);
        Ok(())
    }
}
