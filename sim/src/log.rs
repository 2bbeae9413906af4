//! The simulated log store: frames as the real writer encodes them (`kizo_log_codec`),
//! kept in memory, read back by the real decoder with every check a restart makes. Faults: a
//! flush that fails, a byte that rots in a stored frame.

use kizo_ledger::Commit;
use kizo_log_codec::{decode_frame, FrameEncoder};

#[derive(Clone, Debug, Default)]
pub struct SimLog {
    /// One frame per flush, in LSN order.
    frames: Vec<Vec<u8>>,
    last_lsn: u64,
}

/// Why a recovery refused the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub lsn: u64,
    pub detail: String,
}

impl SimLog {
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// Stores `commit` as one frame (durable from here on).
    pub fn flush(&mut self, commit: &Commit) {
        assert_eq!(
            commit.lsn,
            self.last_lsn + 1,
            "the log takes the next LSN only"
        );
        let mut encoder = FrameEncoder::new(commit.lsn);
        encoder.push(commit);
        self.frames.push(encoder.finish());
        self.last_lsn = commit.lsn;
    }

    /// Flips one bit of frame `index`; returns the frame's first LSN and what to undo it with.
    pub fn corrupt(&mut self, index: usize, byte: usize, bit: u8) -> (u64, Vec<u8>) {
        let original = self.frames[index].clone();
        let frame = &mut self.frames[index];
        let at = byte % frame.len();
        frame[at] ^= 1 << (bit % 8);
        (first_lsn(&original), original)
    }

    /// Puts back a frame from a backup (the operator's repair of a damaged log).
    pub fn restore(&mut self, index: usize, frame: Vec<u8>) {
        self.frames[index] = frame;
    }

    /// Every commit, each frame checked as a restart checks it: checksum, decoding, LSNs
    /// consecutive within and across frames.
    pub fn read_all(&self) -> Result<Vec<Commit>, Damaged> {
        let mut commits = Vec::new();
        let mut next = 1;
        for frame in &self.frames {
            let decoded = decode_frame(frame, next).map_err(|e| Damaged {
                lsn: e.lsn,
                detail: e.detail,
            })?;
            for commit in decoded {
                if commit.lsn != next {
                    return Err(Damaged {
                        lsn: next,
                        detail: format!("a gap: the next frame starts at {}", commit.lsn),
                    });
                }
                next += 1;
                commits.push(commit);
            }
        }
        Ok(commits)
    }
}

fn first_lsn(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[8..16].try_into().expect("a frame header"))
}
