//! Handing a finished file on without copying its bytes. A clip is megabytes, and a job stores,
//! fetches and (in the simulated backend) downloads each several times: on one file system a
//! hard link does that for nothing, where a copy was half of a worker's CPU.
//!
//! The rule that makes it safe: a finished file is never written in place. ffmpeg writes new
//! files, stores write a temporary file and rename it, downloads write into a fresh scratch
//! directory. Two names of one file therefore always show the same, complete bytes.

use std::path::Path;

/// Makes `to` a hard link of `from` where both are on one file system, else a copy, and
/// returns its size. Whatever is at `to` is removed first: it may already be a link of `from`,
/// and a copy onto it would truncate both. The steps run as one blocking task: each
/// `tokio::fs` call is a hand-off to another thread, and those hand-offs were most of what the
/// bench worker spent in the kernel.
pub async fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<u64> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || link_or_copy_blocking(&from, &to))
        .await
        .map_err(std::io::Error::other)?
}

/// `link_or_copy` on the calling thread, for a blocking task that does more around it.
pub fn link_or_copy_blocking(from: &Path, to: &Path) -> std::io::Result<u64> {
    match std::fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::metadata(to).map(|m| m.len()),
        // Someone made `to` again since the remove: never write into what may be their file.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // Another file system, or one without links: a copy, into a file of its own.
        Err(_) => {
            let mut src = std::fs::File::open(from)?;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)?;
            std::io::copy(&mut src, &mut dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn linking_onto_a_link_of_the_same_file_keeps_its_bytes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a finished clip")?;
        assert_eq!(link_or_copy(&a, &b).await?, 15);
        // Again onto the link: a copy would open `b` for writing and truncate `a` with it.
        assert_eq!(link_or_copy(&a, &b).await?, 15);
        assert_eq!(std::fs::read(&a)?, b"a finished clip");
        assert_eq!(std::fs::read(&b)?, b"a finished clip");
        Ok(())
    }
}
