//! Atomic updates of projected-style volumes, like the kubelet's AtomicWriter.
//!
//! Layout of a volume directory:
//!
//! ```text
//! <dir>/..2026_11_24_08_00_00.123456789/<files>   the current payload
//! <dir>/..data -> ..2026_11_24_08_00_00.123456789   swapped with one rename(2)
//! <dir>/<top-level name> -> ..data/<top-level name>
//! ```
//!
//! A reader that opens `<dir>/key` always sees one complete payload.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

use super::error::{NodeError, Result};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// File contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Relative path to contents; the whole content of a volume.
pub type Payload = BTreeMap<String, FileEntry>;

const DATA_LINK: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Checks that a payload path is relative, not empty and does not escape.
pub fn valid_relative_path(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && !path.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Writes `payload` into `dir`, replacing the previous payload atomically.
pub fn write_payload(dir: &Path, payload: &Payload) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir_all(&ts_dir).map_err(|e| NodeError::io(&ts_dir, e))?;
    let mut top_level = BTreeSet::new();
    for (rel, entry) in payload {
        if !valid_relative_path(rel) {
            return Err(NodeError::Spec(format!("invalid volume file path {rel:?}")));
        }
        let target = ts_dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NodeError::io(parent, e))?;
        }
        std::fs::write(&target, &entry.data).map_err(|e| NodeError::io(&target, e))?;
        std::fs::set_permissions(
            &target,
            std::fs::Permissions::from_mode(entry.mode & 0o7777),
        )
        .map_err(|e| NodeError::io(&target, e))?;
        if let Some(Component::Normal(first)) = Path::new(rel).components().next() {
            top_level.insert(first.to_string_lossy().into_owned());
        }
    }
    let old = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(|e| NodeError::io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join(DATA_LINK)).map_err(|e| NodeError::io(dir, e))?;
    for name in &top_level {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link).map_err(|e| NodeError::io(&link, e))?;
        }
    }
    // Remove links for names that left the payload, then the old payload directory.
    let entries = std::fs::read_dir(dir).map_err(|e| NodeError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top_level.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(k, v, m)| {
                (
                    k.to_string(),
                    FileEntry {
                        data: v.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn writes_updates_and_removes_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_payload(d, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::metadata(d.join("sub/b")).unwrap().mode() & 0o777,
            0o400
        );

        write_payload(d, &payload(&[("a", "changed", 0o644)])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "changed");
        assert!(!d.join("sub").exists());
        let stamps = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != DATA_LINK
            })
            .count();
        assert_eq!(stamps, 1, "old payload directory must be removed");
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_payload(dir.path(), &payload(&[("../x", "1", 0o644)])).is_err());
        assert!(write_payload(dir.path(), &payload(&[("/abs", "1", 0o644)])).is_err());
        assert!(!valid_relative_path("..data"));
        assert!(valid_relative_path("a/b.yaml"));
    }
}
