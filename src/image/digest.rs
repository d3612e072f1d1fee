//! Content digests (`sha256:<hex>`) and readers/writers that hash what streams through them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use ring::digest::{Context, SHA256};

/// A validated `sha256:<64 lowercase hex>` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a sha256 digest (expected sha256:<64 hex digits>)")]
pub struct BadDigest(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(ring::digest::digest(&SHA256, bytes).as_ref())
    }

    fn from_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as listings show them.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| BadDigest(s.to_string()))?;
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Digest(s.to_string()))
        } else {
            Err(BadDigest(s.to_string()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental sha256 with a byte count.
pub struct Hasher {
    ctx: Context,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            ctx: Context::new(&SHA256),
            len: 0,
        }
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_hash(self.ctx.finish().as_ref())
    }
}

/// A reader that hashes every byte read through it, optionally copying it to a writer
/// (used to store a blob while it is being unpacked: one read of the source).
pub struct HashingReader<R, W = io::Sink> {
    inner: R,
    hasher: Hasher,
    tee: W,
}

impl<R: Read> HashingReader<R, io::Sink> {
    /// Hashes what is read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
            tee: io::sink(),
        }
    }
}

impl<R: Read, W: Write> HashingReader<R, W> {
    /// Hashes what is read from `inner` and writes a copy of it to `tee`.
    pub fn with_tee(inner: R, tee: W) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
            tee,
        }
    }

    /// Reads and hashes whatever is left in the stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// True when nothing was read yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The digest of the bytes read, and the tee writer.
    pub fn finish(self) -> (Digest, W) {
        (self.hasher.finish(), self.tee)
    }
}

impl<R: Read, W: Write> Read for HashingReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.tee.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_well_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_bad_digests() {
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "sha256:../../../../etc/passwd000000000000000000000000000000000000000000"
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn hashing_reader_hashes_and_tees() {
        let mut copy = Vec::new();
        let mut r = HashingReader::with_tee(&b"hello"[..], &mut copy);
        r.drain().unwrap();
        let (d, _) = r.finish();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(copy, b"hello");
    }
}
