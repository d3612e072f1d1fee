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
            return Err(if file_len == 0 {
                ImageError::UnreadableArchive {
                    what,
                    detail: "the file is empty".into(),
                }
            } else {
                ImageError::Truncated { what }
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
            detail: e.to_string(),
        }
    }
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
