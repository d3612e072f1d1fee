//! Random access to the files of an uncompressed tar archive (oci-archive, docker-archive)
//! without extracting it: one pass builds an index of entry offsets, reads seek straight
//! to the data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::image::error::{ImageError, Result};
use crate::image::layout::LayoutFs;

/// An indexed tar archive.
pub struct TarFs {
    path: PathBuf,
    entries: HashMap<String, (u64, u64)>,
}

fn normalize(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl TarFs {
    /// Indexes the archive at `path`, detecting truncation and compressed archives.
    pub fn open(path: &Path) -> Result<TarFs> {
        let what = path.display().to_string();
        let mut file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound {
                what: "archive".into(),
                path: path.to_path_buf(),
            },
            _ => ImageError::io("cannot open archive", path, e),
        })?;
        let file_len = file
            .metadata()
            .map_err(ImageError::io_at("cannot stat", path))?
            .len();
        let mut magic = [0u8; 4];
        let n =
            read_up_to(&mut file, &mut magic).map_err(ImageError::io_at("cannot read", path))?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(ImageError::UnreadableArchive {
                what,
                detail: "it is compressed; decompress it first (e.g. gunzip or unzstd)".into(),
            });
        }
        if file_len < 512 {
            // Shorter than one tar header: a truncated tar still starts with a header, so
            // only a file that holds the start of one is called truncated.
            let mut head = vec![0u8; file_len as usize];
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_exact(&mut head))
                .map_err(ImageError::io_at("cannot read", path))?;
            return Err(if file_len == 0 {
                ImageError::UnreadableArchive {
                    what,
                    detail: "the file is empty".into(),
                }
            } else if looks_like_tar_start(&head) {
                ImageError::Truncated { what }
            } else {
                ImageError::UnreadableArchive {
                    what,
                    detail: "it is not a tar archive".into(),
                }
            });
        }
        if !looks_like_tar_header(&head_block(&mut file, path)?) {
            return Err(ImageError::UnreadableArchive {
                what,
                detail: "it is not a tar archive (its first block is not a tar header)".into(),
            });
        }
        file.seek(SeekFrom::Start(0))
            .map_err(ImageError::io_at("cannot seek", path))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let iter = archive
            .entries_with_seek()
            .map_err(|e| unreadable(&what, e))?;
        for entry in iter {
            let entry = entry.map_err(|e| unreadable(&what, e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let (offset, size) = (entry.raw_file_position(), entry.size());
            if offset + size > file_len {
                return Err(ImageError::Truncated { what });
            }
            if entry.header().entry_type().is_file() {
                entries.insert(normalize(&name), (offset, size));
            }
        }
        Ok(TarFs {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Entry names (normalized), for diagnostics.
    pub fn contains(&self, rel: &str) -> bool {
        self.entries.contains_key(rel)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn unreadable(what: &str, e: io::Error) -> ImageError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ImageError::Truncated {
            what: what.to_string(),
        }
    } else {
        ImageError::UnreadableArchive {
            what: what.to_string(),
            detail: printable(&e.to_string()),
        }
    }
}

/// The first 512 bytes of the file.
fn head_block(file: &mut File, path: &Path) -> Result<[u8; 512]> {
    let mut block = [0u8; 512];
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut block))
        .map_err(ImageError::io_at("cannot read", path))?;
    Ok(block)
}

/// Whether a 512-byte block is a tar header: its checksum field (bytes 148..156, octal)
/// matches the sum of the block with that field counted as spaces. An all-zero block (an
/// empty archive's end marker) counts too.
fn looks_like_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    stored == sum
}

/// Whether a short file could be the start of a tar archive: its name field is printable
/// text and, if the magic field is there, it says `ustar`.
fn looks_like_tar_start(head: &[u8]) -> bool {
    let name_end = head
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(head.len())
        .min(100);
    let name_ok = name_end > 0 && head[..name_end].iter().all(|b| b.is_ascii_graphic());
    let magic_ok = head.len() < 262 || &head[257..262] == b"ustar";
    name_ok
        && magic_ok
        && head.len() > 100
        && head[name_end..head.len().min(100)].iter().all(|&b| b == 0)
}

/// A message with control characters and other unprintables replaced and its length
/// bounded, so that a hostile or random archive cannot write garbage to the terminal.
fn printable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .take(MAX)
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

impl LayoutFs for TarFs {
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send + '_>, u64)>> {
        let Some(&(offset, size)) = self.entries.get(rel) else {
            return Ok(None);
        };
        let mut f =
            File::open(&self.path).map_err(ImageError::io_at("cannot open archive", &self.path))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(ImageError::io_at("cannot seek in archive", &self.path))?;
        Ok(Some((Box::new(f.take(size)), size)))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
