//! Safe unpacking of (possibly hostile) layer tar archives.
