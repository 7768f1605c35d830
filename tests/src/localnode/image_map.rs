//! The image map: which local binary runs for which container image.
//!
//! File format (YAML), re-read at every container start:
//!
//! ```yaml
//! images:
//!   "ghcr.io/iq720/iq720-bot:*":          # `*` matches any tag of the repository
//!     command: /abs/path/iq720-bot
//!     args: ["--prefix-arg"]              # optional, put before the container's own
//!     env: { RUST_LOG: info }             # optional, the container's env wins
//!   "iq720.io/testproc:latest":           # exact keys win over `*`
//!     command: /abs/path/iq720-testproc
//! ```
//!
//! The argv of a container process is: mapped `args`, then the container's `command`
//! (with `command[0]` dropped when its file name equals the mapped binary's file name,
//! since it names the program the image would have run), then the container's `args`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{NodeError, Result};

/// Parsed image map.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageMap {
    /// `<repository>:<tag>` (or `<repository>:*`) to the local program.
    #[serde(default)]
    pub images: BTreeMap<String, ImageEntry>,
}

/// One local program standing in for an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageEntry {
    /// Absolute path of the binary.
    pub command: PathBuf,
    /// Arguments put before the container's command and args.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment defaults (the container's env overrides them).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl ImageMap {
    /// Parses an image map from YAML text. An empty document is an empty map.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let parsed: Option<Self> = serde_yaml::from_str(text).map_err(|e| NodeError::ImageMap {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(parsed.unwrap_or_default())
    }

    /// Reads the map from a file; a missing file is an empty map.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_yaml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(NodeError::io(path, e)),
        }
    }

    /// Finds the entry for a container image: exact `repo:tag` first, then `repo:*`.
    pub fn resolve(&self, image: &str) -> Option<&ImageEntry> {
        let (repo, tag) = split_image(image);
        self.images
            .get(&format!("{repo}:{tag}"))
            .or_else(|| self.images.get(image))
            .or_else(|| self.images.get(&format!("{repo}:*")))
    }
}

/// Splits an image reference into repository and tag (`latest` when absent; a digest
/// reference `repo@sha256:...` gives the digest as the tag).
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// Builds the argument list (without argv\[0\]) for a mapped container.
pub fn build_args(entry: &ImageEntry, command: &[String], args: &[String]) -> Vec<String> {
    let binary_name = entry.command.file_name().map(|n| n.to_string_lossy());
    let mut out = entry.args.clone();
    let mut command = command.iter();
    if let Some(first) = command.clone().next() {
        let first_name = Path::new(first).file_name().map(|n| n.to_string_lossy());
        if first_name.is_some() && first_name == binary_name {
            command.next();
        }
    }
    out.extend(command.cloned());
    out.extend(args.iter().cloned());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MAP: &str = r#"
images:
  "ghcr.io/iq720/iq720-bot:*":
    command: /opt/bin/iq720-bot
    args: ["--log-format", "json"]
    env: { RUST_LOG: info }
  "ghcr.io/iq720/iq720-bot:0.9.0":
    command: /opt/old/iq720-bot
  "iq720.io/testproc:latest":
    command: /opt/bin/iq720-testproc
"#;

    fn map() -> ImageMap {
        ImageMap::from_yaml(MAP, Path::new("images.yaml")).unwrap()
    }

    #[test]
    fn exact_tag_wins_over_wildcard() {
        let m = map();
        assert_eq!(
            m.resolve("ghcr.io/iq720/iq720-bot:0.9.0").unwrap().command,
            PathBuf::from("/opt/old/iq720-bot")
        );
        assert_eq!(
            m.resolve("ghcr.io/iq720/iq720-bot:1.2.3").unwrap().command,
            PathBuf::from("/opt/bin/iq720-bot")
        );
    }

    #[test]
    fn missing_tag_means_latest() {
        let m = map();
        assert!(m.resolve("iq720.io/testproc").is_some());
        assert!(m.resolve("iq720.io/testproc:v2").is_none());
        assert!(m.resolve("docker.io/library/nginx:1.27").is_none());
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(
            split_image("localhost:5000/x/y"),
            ("localhost:5000/x/y", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/x/y:1"),
            ("localhost:5000/x/y", "1")
        );
        assert_eq!(split_image("a/b@sha256:00"), ("a/b", "sha256:00"));
    }

    #[test]
    fn empty_or_null_map_is_empty() {
        assert!(
            ImageMap::from_yaml("", Path::new("x"))
                .unwrap()
                .images
                .is_empty()
        );
        assert!(
            ImageMap::from_yaml("images: {}", Path::new("x"))
                .unwrap()
                .images
                .is_empty()
        );
        assert!(ImageMap::from_yaml("images: [1", Path::new("x")).is_err());
    }

    #[test]
    fn args_drop_program_name_and_keep_prefix() {
        let m = map();
        let e = m.resolve("ghcr.io/iq720/iq720-bot:1").unwrap();
        let cmd = vec!["/usr/local/bin/iq720-bot".to_string(), "run".to_string()];
        let args = vec!["--config".to_string(), "/etc/c.yaml".to_string()];
        assert_eq!(
            build_args(e, &cmd, &args),
            vec!["--log-format", "json", "run", "--config", "/etc/c.yaml"]
        );
        let other = vec!["sh".to_string(), "-c".to_string()];
        assert_eq!(
            build_args(e, &other, &[]),
            vec!["--log-format", "json", "sh", "-c"]
        );
    }
}
