//! Mapping of volumeMount paths to real directories.
//!
//! Processes run on the host and cannot see a mount at `/etc/config`. The agent creates
//! a real directory for every mount and rewrites every env value, command element and
//! argument that starts with a mount path (`/etc/config` or `/etc/config/...`) to the
//! real directory. `--flag=/etc/config/x` is rewritten too (the part after the first
//! `=`). Paths a program builds itself (hard-coded defaults) are not rewritten.

use std::path::{Path, PathBuf};

/// The mounts of one container, longest mount path first.
#[derive(Debug, Clone, Default)]
pub struct MountMap {
    entries: Vec<(String, PathBuf)>,
}

impl MountMap {
    /// Builds the map from `(mountPath, real directory)` pairs.
    pub fn new(mounts: impl IntoIterator<Item = (String, PathBuf)>) -> Self {
        let mut entries: Vec<(String, PathBuf)> = mounts
            .into_iter()
            .filter(|(p, _)| p.starts_with('/'))
            .map(|(p, real)| {
                let trimmed = p.trim_end_matches('/');
                let key = if trimmed.is_empty() { "/" } else { trimmed };
                (key.to_string(), real)
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        Self { entries }
    }

    /// The `(mountPath, real directory)` pairs, longest path first.
    pub fn iter(&self) -> impl Iterator<Item = &(String, PathBuf)> {
        self.entries.iter()
    }

    /// The real directory of a mount path, if it is mounted.
    pub fn real_dir(&self, mount_path: &str) -> Option<&Path> {
        let key = mount_path.trim_end_matches('/');
        self.entries
            .iter()
            .find(|(p, _)| p == key)
            .map(|(_, r)| r.as_path())
    }

    /// Rewrites a path under a mount to the real location; `None` if not under a mount.
    pub fn rewrite_path(&self, value: &str) -> Option<String> {
        for (mount, real) in &self.entries {
            if value == mount {
                return Some(real.to_string_lossy().into_owned());
            }
            if let Some(rest) = value.strip_prefix(mount.as_str())
                && rest.starts_with('/')
            {
                return Some(format!("{}{rest}", real.to_string_lossy()));
            }
        }
        None
    }

    /// Rewrites a value (whole path, or the value of a `--flag=path`).
    pub fn rewrite(&self, value: &str) -> String {
        if let Some(v) = self.rewrite_path(value) {
            return v;
        }
        if let Some((flag, rest)) = value.split_once('=')
            && let Some(v) = self.rewrite_path(rest)
        {
            return format!("{flag}={v}");
        }
        value.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn map() -> MountMap {
        MountMap::new([
            ("/etc/iq720/".to_string(), PathBuf::from("/s/v/config")),
            (
                "/etc/iq720/tokens".to_string(),
                PathBuf::from("/s/v/tokens"),
            ),
            ("/data".to_string(), PathBuf::from("/s/pv/1")),
            ("relative".to_string(), PathBuf::from("/nope")),
        ])
    }

    #[test]
    fn rewrites_paths_under_mounts_longest_first() {
        let m = map();
        assert_eq!(
            m.rewrite("/etc/iq720/config.yaml"),
            "/s/v/config/config.yaml"
        );
        assert_eq!(m.rewrite("/etc/iq720/tokens/a"), "/s/v/tokens/a");
        assert_eq!(m.rewrite("/data"), "/s/pv/1");
        assert_eq!(m.rewrite("--db=/data/trades.db"), "--db=/s/pv/1/trades.db");
    }

    #[test]
    fn leaves_other_values_alone() {
        let m = map();
        assert_eq!(m.rewrite("/database"), "/database");
        assert_eq!(m.rewrite("relative/x"), "relative/x");
        assert_eq!(m.rewrite("a=b"), "a=b");
        assert_eq!(m.rewrite(""), "");
        assert_eq!(m.real_dir("/data/"), Some(Path::new("/s/pv/1")));
    }
}
