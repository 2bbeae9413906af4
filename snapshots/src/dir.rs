//! Snapshots on the machine's disk: [`RealDisk`] under the pure snapshot folder logic of
//! `kizo-snapshot-format` (the order of writes, every check on read; see its `dir` module),
//! and [`open`] for a folder on it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

pub use kizo_snapshot_format::dir::{
    snapshot_name, Disk, Listed, Loaded, PartBytes, Skipped, SnapshotError, PART_BYTES_MAX,
};

/// A folder of snapshots, on the machine's disk unless another [`Disk`] is named.
pub type SnapshotDir<D = RealDisk> = kizo_snapshot_format::dir::SnapshotDir<D>;

/// The snapshots in `root` on the machine's disk.
pub fn open(root: impl Into<PathBuf>) -> SnapshotDir {
    SnapshotDir::on(root, RealDisk)
}

/// Part files at least this long are mapped rather than read.
pub const MAP_FROM_BYTES: u64 = 1 << 20;

/// The machine's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn read(&self, path: &Path, limit: u64) -> io::Result<AlignedVec> {
        let (file, len) = open_within(path, limit)?;
        read_whole(file, len)
    }

    /// Large parts are mapped from the page cache, which holds them anyway after they were
    /// written or read once: reading them would copy gigabytes into fresh memory, which a
    /// virtual machine must first back and zero (a quarter of a 10M-account start-up).
    fn read_part(&self, path: &Path, limit: u64) -> io::Result<PartBytes> {
        let (file, len) = open_within(path, limit)?;
        if len < MAP_FROM_BYTES {
            return read_whole(file, len).map(PartBytes::Read);
        }
        // SAFETY: a part file is written whole under a temporary name and renamed into place;
        // nothing writes or truncates it afterwards. Pruning, and writing a snapshot again at
        // the same LSN, remove whole folders (moved aside first), which unlinks the files and
        // leaves a mapping intact. Its bytes are checked against the manifest's CRC-32 before
        // anything is decoded from them.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        if map.len() as u64 != len {
            return Err(io::Error::other("the file changed while it was mapped"));
        }
        Ok(PartBytes::Mapped(Box::new(map)))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
}

/// Opens `path` for reading, refused when longer than `limit` bytes; with its length.
fn open_within(path: &Path, limit: u64) -> io::Result<(std::fs::File, u64)> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(io::Error::other(format!(
            "{len} bytes, more than the {limit} allowed"
        )));
    }
    Ok((file, len))
}

/// Reads the `len` bytes of `file`, refusing a file that grew meanwhile.
fn read_whole(mut file: std::fs::File, len: u64) -> io::Result<AlignedVec> {
    let mut bytes = AlignedVec::with_capacity(len as usize);
    bytes.resize(len as usize, 0);
    file.read_exact(&mut bytes)?;
    let mut rest = [0u8; 1];
    if file.read(&mut rest)? != 0 {
        return Err(io::Error::other("the file grew while it was read"));
    }
    Ok(bytes)
}
