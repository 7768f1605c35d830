//! sha256 of the files the bot writes and reads: a writer that hashes what passes
//! through it, so an archive's checksum is known the moment the archive is finished
//! (no second read of a large file), the hash of an existing file, and lower-case hex.
//! Backups and maintenance archives both announce that checksum to the operator, which
//! stores it as object metadata when the upload starts.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// sha256 and size of written or read bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// sha256 (hex).
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A writer that counts and hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Flushes and returns the inner writer with the hash of everything written.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.inner.flush()?;
        let written = Written {
            sha256: hex(&self.hasher.finalize()),
            bytes: self.bytes,
        };
        Ok((self.inner, written))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 and size of a file.
pub fn sha256_file(path: &Path) -> io::Result<Written> {
    let mut f = File::open(path)?;
    let mut h = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut h)?;
    Ok(h.finish()?.1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_writer_and_the_file_hash_agree_with_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = HashingWriter::new(File::create(&path).unwrap());
        w.write_all(b"abc").unwrap();
        let (_, written) = w.finish().unwrap();
        // sha256("abc"), FIPS 180-2 appendix B.1
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(written.sha256, abc);
        assert_eq!(written.bytes, 3);
        assert_eq!(sha256_file(&path).unwrap(), written);
    }
}
