//! The reader under `tar::Archive`: it watches the stream so that errors coming out of the
//! tar crate can be classified (truncation vs. a failing decompressor vs. a malformed
//! archive), and it bounds what the tar crate buffers in memory for extension headers.

use std::cell::Cell;
use std::io::{self, Read};

use super::error::UnpackError;

/// What the reader has seen; shared (by reference) with the unpacker while the archive
/// owns the reader.
pub(super) struct StreamState {
    /// The underlying stream ended (a read returned 0, or failed with `UnexpectedEof`).
    eof: Cell<bool>,
    /// The underlying stream returned an error.
    read_failed: Cell<bool>,
    /// Bytes read since the last entry's data, i.e. headers being parsed by the tar crate.
    header_bytes: Cell<u64>,
    /// Whether entry data (not headers) is being read.
    in_data: Cell<bool>,
    /// `header_bytes` went over `header_budget`.
    over_budget: Cell<bool>,
    header_budget: u64,
}

impl StreamState {
    /// A fresh state allowing `header_budget` bytes of headers (incl. PAX data, GNU long
    /// names and sparse maps, which the tar crate reads into memory) per entry.
    pub(super) fn new(header_budget: u64) -> StreamState {
        StreamState {
            eof: Cell::new(false),
            read_failed: Cell::new(false),
            header_bytes: Cell::new(0),
            in_data: Cell::new(false),
            over_budget: Cell::new(false),
            header_budget,
        }
    }

    /// Entry data is about to be read: it does not count against the header budget.
    pub(super) fn begin_data(&self) {
        self.in_data.set(true);
    }

    /// The entry is done; what follows is the next entry's headers.
    pub(super) fn end_data(&self) {
        self.in_data.set(false);
        self.header_bytes.set(0);
    }

    /// Whether the underlying stream has ended.
    pub(super) fn saw_eof(&self) -> bool {
        self.eof.get()
    }

    /// Turns an error out of the tar crate (or out of an entry's reader) into an
    /// `UnpackError`, using what the reader saw.
    pub(super) fn classify(&self, err: io::Error) -> UnpackError {
        if self.over_budget.get() {
            UnpackError::HeadersTooLarge {
                limit: self.header_budget,
            }
        } else if self.eof.get() {
            UnpackError::Truncated
        } else if self.read_failed.get() {
            UnpackError::Read { error: err }
        } else {
            UnpackError::Malformed {
                detail: err.to_string(),
            }
        }
    }

    fn account(&self, n: usize) -> io::Result<()> {
        if self.in_data.get() {
            return Ok(());
        }
        let total = self.header_bytes.get().saturating_add(n as u64);
        self.header_bytes.set(total);
        if total > self.header_budget {
            self.over_budget.set(true);
            return Err(io::Error::other("archive extension headers are too large"));
        }
        Ok(())
    }
}

/// A `Read` adapter recording EOF/errors and the header budget in a `StreamState`.
pub(super) struct TrackedReader<'s, R> {
    inner: R,
    state: &'s StreamState,
}

impl<'s, R: Read> TrackedReader<'s, R> {
    /// Wraps `inner`.
    pub(super) fn new(inner: R, state: &'s StreamState) -> Self {
        TrackedReader { inner, state }
    }
}

impl<R: Read> Read for TrackedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    self.state.eof.set(true);
                    return Ok(0);
                }
                Ok(n) => {
                    self.state.account(n)?;
                    return Ok(n);
                }
                // The tar crate's header reads do not retry on EINTR.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        self.state.eof.set(true);
                    }
                    self.state.read_failed.set(true);
                    return Err(e);
                }
            }
        }
    }
}
