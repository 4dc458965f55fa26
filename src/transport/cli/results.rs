//! Writing one analysis' encoded results (made by [`crate::pipeline::results`] while the
//! volume was in memory) into the `--out` directory, each file through a temporary name and
//! a rename so an interrupted run never leaves half a file.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

pub use crate::pipeline::results::Choice;
use crate::pipeline::Analysis;

/// Writes the encoded results of one analysed series (none when it was not analysed).
pub fn write(dir: &Path, analysis: &Analysis) -> anyhow::Result<()> {
    let uid = &analysis.report.series_instance_uid;
    for encoded in &analysis.results {
        write_atomic(dir, uid, &encoded.suffix, &encoded.bytes)?;
    }
    Ok(())
}

/// Writes `dir/<uid>.<suffix>` through a temporary file and a rename.
pub fn write_atomic(dir: &Path, uid: &str, suffix: &str, bytes: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !uid.is_empty() && uid.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "series UID {uid:?} is not a valid file name"
    );
    let path = dir.join(format!("{uid}.{suffix}"));
    let tmp = dir.join(format!(".{uid}.{suffix}.tmp"));
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("could not create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("could not write {}", path.display()))
}
