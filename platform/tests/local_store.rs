//! The local artifact store on real files: it links where it can, and a stored artifact never
//! changes because a file it shares bytes with was written or replaced.

#![allow(missing_docs)]

use aiprod_domain::JobId;
use aiprod_platform::storage::ArtifactStore;

#[tokio::test]
async fn stored_and_fetched_files_keep_their_bytes_whatever_happens_to_the_other_names()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = ArtifactStore::local(&dir.path().join("artifacts"))?;
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let job = JobId::new();

    // Stored, then the scratch file is gone: the artifact stays.
    let shot = scratch.join("shot.mp4");
    std::fs::write(&shot, b"first take")?;
    let uri = store.put_file(job, "shot.mp4", &shot).await?;
    std::fs::remove_file(&shot)?;
    assert_eq!(store.get(&uri).await?, b"first take");

    // Fetched twice onto the same name: the second fetch must not truncate the first, which
    // may be the artifact itself under another name.
    let fetched = scratch.join("fetched.mp4");
    assert_eq!(store.get_to_file(&uri, &fetched).await?, 10);
    assert_eq!(store.get_to_file(&uri, &fetched).await?, 10);
    assert_eq!(std::fs::read(&fetched)?, b"first take");
    assert_eq!(store.get(&uri).await?, b"first take");

    // Stored again under the same name: the earlier fetch keeps the bytes it was given.
    let retake = scratch.join("retake.mp4");
    std::fs::write(&retake, b"second take, longer")?;
    let again = store.put_file(job, "shot.mp4", &retake).await?;
    assert_eq!(again, uri);
    assert_eq!(store.get(&uri).await?, b"second take, longer");
    assert_eq!(std::fs::read(&fetched)?, b"first take");
    Ok(())
}
