//! A directory of recorded fixtures under a size cap: when a new recording takes it over the
//! cap, the oldest recordings are deleted. Files that are not recordings are never touched.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// Recordings in one directory, oldest first, and the cap on their total size.
#[derive(Debug)]
pub struct RecordDir {
    dir: PathBuf,
    max_bytes: u64,
    /// Our recordings with their sizes, oldest first; `None` until the directory is first used.
    files: Option<VecDeque<(PathBuf, u64)>>,
    total: u64,
    sequence: u64,
}

impl RecordDir {
    /// Recordings go to `dir` (created on first use), at most `max_bytes` in all; the newest
    /// recording is always kept, even alone above the cap.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self { dir: dir.into(), max_bytes, files: None, total: 0, sequence: 0 }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Total size of the recordings in the directory, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Writes `text` as a new recording named after the time and `subject` (e.g.
    /// `shadow-diff-prod-web`), then deletes the oldest recordings beyond the cap. The file
    /// appears whole or not at all (written aside, then renamed).
    pub fn write(&mut self, subject: &str, text: &str) -> Result<PathBuf> {
        self.open()?;
        self.sequence += 1;
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.{:03}Z-{:04}-{subject}.yaml",
            now.strftime("%Y%m%dT%H%M%S"),
            now.subsec_millisecond(),
            self.sequence % 10_000
        );
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("writing {}", path.display()))
            .inspect_err(|_| drop(std::fs::remove_file(&partial)))?;
        let size = text.len() as u64;
        self.files.get_or_insert_default().push_back((path.clone(), size));
        self.total += size;
        self.rotate();
        Ok(path)
    }

    /// Creates the directory and takes stock of the recordings already in it (a restarted
    /// controller keeps rotating what the last run wrote).
    fn open(&mut self) -> Result<()> {
        if self.files.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            if is_recording(&name.to_string_lossy()) {
                found.push((entry.path(), entry.metadata()?.len()));
            }
        }
        // Names start with the UTC time, so name order is age order.
        found.sort();
        self.total = found.iter().map(|(_, size)| size).sum();
        self.files = Some(found.into());
        Ok(())
    }

    /// Deletes the oldest recordings until the total fits the cap (the newest always stays).
    fn rotate(&mut self) {
        let files = self.files.get_or_insert_default();
        while self.total > self.max_bytes && files.len() > 1 {
            let Some((oldest, size)) = files.pop_front() else { break };
            if let Err(e) = std::fs::remove_file(&oldest)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %oldest.display(), error = %e, "could not delete an old recording");
            }
            self.total -= size;
        }
    }
}

/// Whether `name` is one of our recordings: `YYYYMMDDTHHMMSS.mmmZ-….yaml`.
fn is_recording(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.ends_with(".yaml") && bytes.len() > 21 && bytes[..8].iter().all(u8::is_ascii_digit) && bytes[8] == b'T'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("record-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn recordings(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_oldest_recordings_go_once_the_cap_is_reached() {
        let dir = scratch("rotate");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a recording").unwrap();
        let mut records = RecordDir::new(&dir, 250);
        let written: Vec<PathBuf> =
            (0..5).map(|i| records.write(&format!("sync-ns-rs{i}"), &"x".repeat(100)).unwrap()).collect();
        assert_eq!(records.total_bytes(), 200);
        let left = recordings(&dir);
        assert_eq!(left.len(), 3, "{left:?}");
        assert_eq!(left[2], "notes.txt");
        assert!(left[0].ends_with("-sync-ns-rs3.yaml") && left[1].ends_with("-sync-ns-rs4.yaml"), "{left:?}");
        assert!(written[4].exists() && !written[0].exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_restart_counts_the_recordings_already_there() {
        let dir = scratch("restart");
        RecordDir::new(&dir, 1_000).write("failure-ns-a", &"y".repeat(150)).unwrap();
        let mut again = RecordDir::new(&dir, 200);
        again.write("failure-ns-b", &"z".repeat(100)).unwrap();
        assert_eq!(again.total_bytes(), 100, "the first run's recording was rotated out");
        assert_eq!(recordings(&dir).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_error_naming_it() {
        let file = scratch("blocked");
        std::fs::write(&file, "a file where the directory should be").unwrap();
        let mut records = RecordDir::new(file.join("fixtures"), 1_000);
        let error = format!("{:#}", records.write("sync-ns-a", "text").unwrap_err());
        assert!(error.starts_with(&format!("creating {}", file.join("fixtures").display())), "{error}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn only_our_file_names_count_as_recordings() {
        assert!(is_recording("20260101T000000.000Z-0001-sync-ns-a.yaml"));
        assert!(!is_recording("my-fixture.yaml"));
        assert!(!is_recording("20260101T000000.000Z-0001-sync-ns-a.yaml.partial"));
    }
}
