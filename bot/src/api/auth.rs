//! Bearer tokens read from a mounted directory and re-read when it changes.
//!
//! Every regular file (symlinks followed, so the kubelet's `..data` layout works) whose
//! name does not start with `.` holds one token: its trimmed content. Any token present is
//! valid, so an old and a new token overlap during a rotation. The file name (the key
//! of the token Secret, e.g. `token-1767225600`) is the token's *id*: the security
//! audit ([`super::security`]) names tokens by it, never by their value.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{info, warn};

use super::security::Audit;

/// Largest token file read (bytes); bigger files are ignored.
const MAX_TOKEN_FILE: u64 = 4096;
/// Shortest accepted token.
const MIN_TOKEN_LEN: usize = 8;

/// One accepted token: its id (the file name) and its value (secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The file name, i.e. the key of the token Secret. Not secret.
    pub id: String,
    /// The token itself.
    pub value: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// The current token set, and the audit of its use.
pub struct TokenStore {
    dir: PathBuf,
    tokens: RwLock<Vec<Token>>,
    audit: Audit,
}

/// Read all tokens in `dir`, sorted by file name (a value found under two names keeps
/// the first).
pub fn read_tokens(dir: &Path) -> std::io::Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // metadata() follows symlinks: a link to a file counts, a link to a dir does not.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_TOKEN_FILE {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            let t = text.trim();
            if t.len() >= MIN_TOKEN_LEN && !tokens.iter().any(|x: &Token| x.value == t) {
                tokens.push(Token {
                    id: name.to_string_lossy().into_owned(),
                    value: t.to_string(),
                });
            }
        }
    }
    Ok(tokens)
}

/// Compare without early exit on the first differing byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenStore {
    /// Load tokens from `dir` (a missing dir means no valid token: every call is refused).
    pub fn new(dir: &Path) -> Self {
        let s = TokenStore {
            dir: dir.to_path_buf(),
            tokens: RwLock::new(Vec::new()),
            audit: Audit::default(),
        };
        s.reload();
        s
    }

    /// Re-read the directory; returns the number of tokens.
    pub fn reload(&self) -> usize {
        let new = match read_tokens(&self.dir) {
            Ok(t) => t,
            Err(e) => {
                warn!(target: "security", dir = %self.dir.display(), error = %e, "cannot read token directory; API calls will be refused");
                Vec::new()
            }
        };
        let n = new.len();
        if let Ok(mut cur) = self.tokens.write()
            && *cur != new
        {
            info!(target: "security", tokens = n, "API token set changed");
            *cur = new;
        }
        n
    }

    /// Whether `presented` is one of the current tokens.
    pub fn check(&self, presented: &str) -> bool {
        self.identify(presented).is_some()
    }

    /// The id of the current token equal to `presented`, if any. Every token is
    /// compared in full, whichever matches.
    pub fn identify(&self, presented: &str) -> Option<String> {
        let tokens = self.tokens.read().ok()?;
        tokens.iter().fold(None, |found, tok| {
            let hit = ct_eq(tok.value.as_bytes(), presented.as_bytes());
            found.or_else(|| hit.then(|| tok.id.clone()))
        })
    }

    /// Ids of the current tokens, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.tokens
            .read()
            .map(|t| t.iter().map(|tok| tok.id.clone()).collect())
            .unwrap_or_default()
    }

    /// The record of failed and successful authentications.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Number of tokens loaded.
    pub fn len(&self) -> usize {
        self.tokens.read().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no token is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Poll the directory every `every` until `stop` is set.
    pub fn watch(&self, every: Duration, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            self.reload();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_follows_links_skips_dotfiles() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // kubelet layout: ..2026_x/token, ..data -> ..2026_x, token -> ..data/token
        std::fs::create_dir(d.join("..2026_x")).unwrap();
        std::fs::write(d.join("..2026_x/token"), "secret-token-one\n").unwrap();
        std::os::unix::fs::symlink("..2026_x", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", d.join("token")).unwrap();
        std::fs::write(d.join(".hidden"), "hidden-token-xx").unwrap();
        std::fs::write(d.join("short"), "abc").unwrap();
        std::fs::write(d.join("second"), "  secret-token-two  ").unwrap();
        let s = TokenStore::new(d);
        assert_eq!(s.len(), 2);
        assert!(s.check("secret-token-one"));
        assert!(s.check("secret-token-two"));
        assert!(!s.check("hidden-token-xx"));
        assert!(!s.check("abc"));
        assert!(!s.check(""));
        assert_eq!(s.identify("secret-token-one").as_deref(), Some("token"));
        assert_eq!(s.identify("secret-token-two").as_deref(), Some("second"));
        assert_eq!(s.identify("secret-token-three"), None);
        assert_eq!(s.ids(), vec!["second".to_string(), "token".to_string()]);
        std::fs::remove_file(d.join("second")).unwrap();
        s.reload();
        assert!(!s.check("secret-token-two"));
    }

    #[test]
    fn missing_dir_refuses_everything() {
        let s = TokenStore::new(Path::new("/nonexistent/iq720/tokens"));
        assert!(s.is_empty());
        assert!(!s.check("anything-at-all"));
    }
}
