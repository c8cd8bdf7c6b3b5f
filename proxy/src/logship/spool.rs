//! The disk spool: batches that could not be shipped, in append-only segment files, replayed
//! oldest first.
//!
//! A segment is a sequence of frames `len: u32 LE | check: u64 LE | payload`, where `check`
//! is the first 8 bytes of the payload's SHA-256. Each append is followed by `fsync`
//! (`sync_data`), so a batch the spool accepted survives a crash of the process or the host.
//! A process always starts a new segment, so a frame torn by a crash can only be the last of
//! an old segment; reading stops there. The replay position is kept in `cursor` (segment and
//! offset, replaced atomically by rename); a crash between shipping a batch and moving the
//! cursor ships that batch again, which the database's unique request id absorbs.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
const HEADER: u64 = 12;
/// Largest frame accepted when reading (a corrupt length must not allocate gigabytes).
const MAX_FRAME: u64 = 256 << 20;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// (sequence number, size in bytes), oldest first.
    segments: VecDeque<(u64, u64)>,
    /// The segment this process appends to, once it has appended.
    writer: Option<(u64, File)>,
    cursor: (u64, u64),
}

fn segment_name(seq: u64) -> String {
    format!("seg-{seq:020}.log")
}

fn check(payload: &[u8]) -> u64 {
    let d = Sha256::digest(payload);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

impl Spool {
    /// Find the segments left by earlier runs. The directory is made on the first append
    /// (a gateway whose sinks never fail leaves no trace); one that cannot be made is an error
    /// now, not later.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            if parent.exists() && !parent.is_dir() {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    parent.display()
                )));
            }
        }
        let mut segments = Vec::new();
        let listing = match fs::read_dir(dir) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for entry in listing.into_iter().flatten() {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("seg-"))
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push((seq, entry.metadata()?.len()));
        }
        segments.sort_unstable();
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(' ')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((0, 0));
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segments: segments.into(),
            writer: None,
            cursor,
        };
        // Segments before the cursor were shipped already.
        while let Some(&(seq, _)) = spool.segments.front() {
            if seq < spool.cursor.0 {
                spool.remove_head()?;
            } else {
                break;
            }
        }
        if let Some(&(seq, _)) = spool.segments.front() {
            if seq != spool.cursor.0 {
                spool.cursor = (seq, 0);
            }
        }
        Ok(spool)
    }

    /// Bytes on disk (including the already shipped start of the oldest segment).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// True when nothing is waiting to be replayed.
    pub fn is_empty(&self) -> bool {
        match self.segments.front() {
            None => true,
            Some(&(seq, size)) => {
                self.segments.len() == 1 && seq == self.cursor.0 && self.cursor.1 >= size
            }
        }
    }

    /// Append one batch and fsync. `Ok(false)`: the spool is full, nothing was written.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<bool> {
        let frame = HEADER + payload.len() as u64;
        if self.bytes() + frame > self.max_bytes {
            return Ok(false);
        }
        let roll = match &self.writer {
            None => true,
            Some((seq, _)) => self
                .segments
                .back()
                .is_none_or(|&(s, size)| s != *seq || size + frame > SEGMENT_BYTES),
        };
        if roll {
            fs::create_dir_all(&self.dir)?;
            let seq = self
                .segments
                .back()
                .map(|s| s.0 + 1)
                .unwrap_or(self.cursor.0.max(1));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.dir.join(segment_name(seq)))?;
            // The new file's directory entry must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.writer = Some((seq, file));
            self.segments.push_back((seq, 0));
            if self.segments.len() == 1 {
                self.cursor = (seq, 0);
            }
        }
        let Some((_, file)) = self.writer.as_mut() else {
            return Err(io::Error::other("spool writer missing"));
        };
        let mut buf = Vec::with_capacity(frame as usize);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&check(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        file.write_all(&buf)?;
        file.sync_data()?;
        if let Some(last) = self.segments.back_mut() {
            last.1 += frame;
        }
        Ok(true)
    }

    fn is_writing(&self, seq: u64) -> bool {
        self.writer.as_ref().is_some_and(|(s, _)| *s == seq)
    }

    fn remove_head(&mut self) -> io::Result<()> {
        if let Some((seq, _)) = self.segments.pop_front() {
            if self.is_writing(seq) {
                self.writer = None;
            }
            match fs::remove_file(self.dir.join(segment_name(seq))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The oldest batch not yet replayed, and its frame length (for [`Spool::advance`]).
    pub fn peek(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        loop {
            let Some(&(seq, size)) = self.segments.front() else {
                return Ok(None);
            };
            if self.cursor.0 != seq {
                self.cursor = (seq, 0);
            }
            let offset = self.cursor.1;
            let frame = if offset + HEADER <= size {
                self.read_frame(seq, offset, size)?
            } else {
                None
            };
            match frame {
                Some(payload) => {
                    let len = HEADER + payload.len() as u64;
                    return Ok(Some((payload, len)));
                }
                None if self.is_writing(seq) => return Ok(None),
                None => {
                    if offset < size {
                        tracing::warn!(
                            segment = %segment_name(seq),
                            offset,
                            "spool segment ends in a torn or corrupt frame; the rest is skipped"
                        );
                    }
                    // Finished (or unreadable past here): on to the next segment.
                    self.remove_head()?;
                    let next = self.segments.front().map(|s| s.0).unwrap_or(seq + 1);
                    self.cursor = (next, 0);
                    self.save_cursor()?;
                }
            }
        }
    }

    fn read_frame(&self, seq: u64, offset: u64, size: u64) -> io::Result<Option<Vec<u8>>> {
        let mut f = File::open(self.dir.join(segment_name(seq)))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut head = [0u8; HEADER as usize];
        f.read_exact(&mut head)?;
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(&head[..4]);
        let len = u64::from(u32::from_le_bytes(len4));
        if len > MAX_FRAME || offset + HEADER + len > size {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        f.read_exact(&mut payload)?;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&head[4..]);
        if check(&payload) != u64::from_le_bytes(sum) {
            return Ok(None);
        }
        Ok(Some(payload))
    }

    /// The batch returned by [`Spool::peek`] was shipped: move past it.
    pub fn advance(&mut self, frame_len: u64) -> io::Result<()> {
        self.cursor.1 += frame_len;
        if let Some(&(seq, size)) = self.segments.front() {
            if seq == self.cursor.0 && self.cursor.1 >= size && !self.is_writing(seq) {
                self.remove_head()?;
                let next = self.segments.front().map(|s| s.0).unwrap_or(seq + 1);
                self.cursor = (next, 0);
            } else if seq == self.cursor.0 && self.cursor.1 >= size && self.segments.len() == 1 {
                // Everything replayed: start over in a fresh segment next time.
                self.remove_head()?;
                self.cursor = (seq + 1, 0);
            }
        }
        self.save_cursor()
    }

    fn save_cursor(&self) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", self.cursor.0, self.cursor.1))?;
        fs::rename(tmp, self.dir.join("cursor"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mcp-spool-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn drain(s: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((p, len)) = s.peek().unwrap() {
            out.push(p);
            s.advance(len).unwrap();
        }
        out
    }

    #[test]
    fn replays_in_order_across_reopen_and_survives_torn_tail() {
        let d = dir("order");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert!(s.is_empty());
        for i in 0..5u8 {
            assert!(s.append(&[i; 10]).unwrap());
        }
        let (first, len) = s.peek().unwrap().unwrap();
        assert_eq!(first, vec![0u8; 10]);
        s.advance(len).unwrap();
        drop(s);
        // A crash tore a frame at the end of the segment.
        let seg = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .unwrap()
            .path();
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&[200, 0, 0, 0, 1, 2])
            .unwrap();
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert!(!s.is_empty());
        assert!(s.append(&[9; 3]).unwrap());
        let got = drain(&mut s);
        assert_eq!(
            got,
            vec![
                vec![1; 10],
                vec![2; 10],
                vec![3; 10],
                vec![4; 10],
                vec![9; 3]
            ]
        );
        assert!(s.is_empty());
        drop(s);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert!(drain(&mut s).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_past_its_size() {
        let d = dir("full");
        let mut s = Spool::open(&d, 100).unwrap();
        assert!(s.append(&[1; 50]).unwrap());
        assert!(!s.append(&[2; 50]).unwrap());
        assert_eq!(drain(&mut s), vec![vec![1; 50]]);
        assert!(s.append(&[3; 50]).unwrap(), "room again once replayed");
        let _ = fs::remove_dir_all(&d);
    }
}
