//! Free space on the filesystem that holds a store, and a ballast file that keeps some of it
//! back.
//!
//! sled 0.34 makes the first failed write permanent for the open database: after one
//! `ENOSPC` every later write and flush of that process fails, even once space is freed. So a
//! broker must stop taking writes *before* the disk is full, not when sled says so. The
//! ballast is space it holds while all is well and gives back when it stops: room for what it
//! accepted already (batches on their way to disk, offset commits, the ledger) to land.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Bytes of a filesystem: free to an unprivileged writer, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub free: u64,
    pub size: u64,
}

/// The space of the filesystem that holds `path` (`statvfs`).
pub fn space(path: &Path) -> io::Result<Space> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: statvfs is plain data; fstatvfs fills it and reads only the descriptor.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let (unit, avail, blocks) = (u64::from(st.f_frsize), u64::from(st.f_bavail), u64::from(st.f_blocks));
    Ok(Space { free: avail.saturating_mul(unit), size: blocks.saturating_mul(unit) })
}

/// A file of `bytes` allocated bytes that holds space back until it is released.
#[derive(Debug)]
pub struct Ballast {
    path: PathBuf,
    bytes: u64,
}

impl Ballast {
    pub fn new(path: PathBuf, bytes: u64) -> Ballast {
        Ballast { path, bytes }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when the file exists at its full size.
    pub fn held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Allocates the file (`posix_fallocate`, so its blocks are taken, not a sparse hole).
    /// A failure leaves no partial file behind.
    pub fn fill(&self) -> io::Result<()> {
        if self.held() {
            return Ok(());
        }
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        let len =
            libc::off_t::try_from(self.bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: only the descriptor, which `file` keeps open, is read.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if rc != 0 {
            drop(file);
            let _ = std::fs::remove_file(&self.path);
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Removes the file; true when there was one.
    pub fn release(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ballast_takes_its_space_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let ballast = Ballast::new(dir.path().join("ballast"), 4 << 20);
        assert!(!ballast.held());
        ballast.fill().unwrap();
        assert!(ballast.held());
        // Allocated, not sparse: the blocks count.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join("ballast")).unwrap();
        assert!(meta.blocks() * 512 >= 4 << 20, "{} blocks", meta.blocks());
        assert!(ballast.release().unwrap());
        assert!(!ballast.release().unwrap());
        assert!(!ballast.held());
    }

    #[test]
    fn space_is_read_from_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.size > 0 && s.free <= s.size, "{s:?}");
        assert!(space(&dir.path().join("missing")).is_err());
    }
}
