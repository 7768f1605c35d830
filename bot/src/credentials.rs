//! Exchange credentials, read from the directory the operator mounts from the Secret
//! named in `spec.exchange.credentialsSecretRef`, and swapped in place when it changes.
//!
//! Why hot: exchange keys are rotated at the exchange (by hand or by a secret manager)
//! and written to the Secret; the kubelet refreshes the mounted files within about a
//! minute with one atomic `..data` symlink swap. Restarting the bot for that would stop
//! trading for nothing, so the bot polls the directory (every [`POLL`]), and when the
//! sha256 of the files changes it
//!
//! 1. **stages** the new set (reads every file of one `..data` snapshot, so a swap in
//!    the middle of the read never mixes old and new files),
//! 2. **verifies** it through [`ExchangeAuth`] — the simulated exchange of paper mode
//!    checks that the required keys ([`REQUIRED_KEYS`]) are present and non-empty; a
//!    live exchange adapter makes an authenticated call with the staged keys,
//! 3. **swaps** it in atomically only when verified. A set that fails verification is
//!    rejected: the previous set stays in use and the error is kept for
//!    `GET /api/v1/security` (`exchangeCredentials.lastError`) and counted in
//!    `iq720_bot_exchange_credentials_reloads_total{result="rejected"}`.
//!
//! Keys are the Secret's key names (file names): `apiKey`, `apiSecret`, and optional
//! ones such as `passphrase`. Values never reach a log, an error or the API; the set is
//! named by its fingerprint, the first 12 hex characters of a sha256 over key names and
//! values — enough to tell two sets apart, useless to recover one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use iq720_contract::api::ExchangeCredentialsReport;
use iq720_contract::config::Mode;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// How often the mounted directory is checked for a change.
pub const POLL: Duration = Duration::from_secs(2);
/// Keys every set must have, non-empty.
pub const REQUIRED_KEYS: &[&str] = &["apiKey", "apiSecret"];
/// Largest credentials file read (bytes); a bigger file makes the set invalid.
const MAX_FILE: u64 = 16 * 1024;
/// Hex characters of the sha256 shown as a fingerprint.
const FINGERPRINT_LEN: usize = 12;
/// The kubelet's link to the current snapshot of a Secret volume.
const DATA_LINK: &str = "..data";

/// Why a credential set cannot be used. Messages name keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The directory cannot be read.
    #[error("cannot read the credentials directory {dir}: {reason}")]
    Unreadable {
        /// The directory.
        dir: String,
        /// The I/O error.
        reason: String,
    },
    /// A required key is missing or empty.
    #[error("key {0} is missing or empty")]
    MissingKey(String),
    /// A file is larger than [`MAX_FILE`].
    #[error("key {0} is larger than 16 KiB")]
    TooLarge(String),
    /// The exchange refused the credentials (a live adapter's authenticated call).
    #[error("the exchange refused the credentials: {0}")]
    Refused(String),
}

/// One set of credentials: key name → value. `Debug` shows key names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CredentialSet {
    entries: BTreeMap<String, String>,
    /// Keys whose file was too large (kept so verification can reject the set).
    oversized: Vec<String>,
}

impl std::fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSet")
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .field("values", &"<redacted>")
            .finish()
    }
}

impl CredentialSet {
    /// A set from key/value pairs (values are trimmed like file contents).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        CredentialSet {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
            oversized: Vec::new(),
        }
    }

    /// The value of a key (for an exchange adapter; never log it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Key names, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// First 12 hex characters of the sha256 over every key name and value (each
    /// followed by a NUL byte, in key order). One-way: it identifies a set, it cannot
    /// be turned back into one.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.entries {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let mut hex = crate::digest::hex(&h.finalize());
        hex.truncate(FINGERPRINT_LEN);
        hex
    }

    /// Well-formed: every [`REQUIRED_KEYS`] present and non-empty, no oversized file.
    pub fn well_formed(&self) -> Result<(), CredentialError> {
        if let Some(k) = self.oversized.first() {
            return Err(CredentialError::TooLarge(k.clone()));
        }
        for key in REQUIRED_KEYS {
            if self.get(key).is_none_or(str::is_empty) {
                return Err(CredentialError::MissingKey((*key).to_string()));
            }
        }
        Ok(())
    }
}

/// Checks credentials with the exchange before the bot uses them. Paper mode uses
/// [`SimulatedExchange`]; a live exchange adapter implements this with an
/// authenticated call (for example reading the account balance with the staged keys),
/// so a key the exchange does not accept never replaces one it does.
pub trait ExchangeAuth: Send + Sync {
    /// `Ok` when `set` may replace the set in use.
    fn verify(&self, set: &CredentialSet) -> Result<(), CredentialError>;
}

/// The simulated exchange of paper mode: accepts any well-formed set.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedExchange;

impl ExchangeAuth for SimulatedExchange {
    fn verify(&self, set: &CredentialSet) -> Result<(), CredentialError> {
        set.well_formed()
    }
}

/// The verifier for a trading mode (live mode has no adapter in this release and is
/// refused by configuration validation; it gets the same well-formedness check).
pub fn auth_for(mode: Mode) -> Box<dyn ExchangeAuth> {
    match mode {
        Mode::Paper | Mode::Live => Box::new(SimulatedExchange),
    }
}

/// A snapshot of the directory: the sha256 of its files (names and raw contents, the
/// change detector) and the set parsed from them.
struct Snapshot {
    digest: [u8; 32],
    set: CredentialSet,
}

/// Reads one consistent snapshot of `dir`: through `..data` when the directory is a
/// Secret volume (one resolved snapshot directory), else the directory itself. Every
/// regular file (symlinks followed) whose name does not start with `.` is a key.
fn read_snapshot(dir: &Path) -> Result<Snapshot, CredentialError> {
    let unreadable = |e: std::io::Error| CredentialError::Unreadable {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    };
    let base = match std::fs::canonicalize(dir.join(DATA_LINK)) {
        Ok(p) => p,
        Err(_) => dir.to_path_buf(),
    };
    let mut entries: Vec<_> = std::fs::read_dir(&base)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    let mut h = Sha256::new();
    let mut set = CredentialSet::default();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        h.update(name.as_bytes());
        h.update([0]);
        if meta.len() > MAX_FILE {
            h.update(meta.len().to_le_bytes());
            set.oversized.push(name);
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(unreadable)?;
        h.update(&bytes);
        h.update([0]);
        let value = String::from_utf8_lossy(&bytes).trim().to_string();
        set.entries.insert(name, value);
    }
    Ok(Snapshot {
        digest: h.finalize().into(),
        set,
    })
}

/// What a check of the directory did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// No change since the last check (or no directory configured).
    Unchanged,
    /// A new set was verified and is in use.
    Applied,
    /// A new set (or an unreadable directory) was seen and refused; the previous set
    /// stays in use.
    Rejected(CredentialError),
}

/// The set in use and when it was loaded.
struct Active {
    set: Arc<CredentialSet>,
    fingerprint: String,
    loaded_at: Timestamp,
}

#[derive(Default)]
struct State {
    active: Option<Active>,
    /// Digest of the files last looked at (applied or rejected); `None` before the
    /// first read or after an unreadable directory.
    seen: Option<[u8; 32]>,
    last_change_seen: Option<Timestamp>,
    last_error: Option<String>,
}

/// The exchange credentials of the bot: the verified set in use, and the outcome of
/// the last change seen (thread safe).
pub struct CredentialStore {
    dir: Option<PathBuf>,
    auth: Box<dyn ExchangeAuth>,
    state: RwLock<State>,
}

impl CredentialStore {
    /// A store for `dir` (`None`: no credentials configured, nothing to report), loaded
    /// at once through the same staged check as every later change.
    pub fn new(dir: Option<&Path>, auth: Box<dyn ExchangeAuth>) -> Self {
        let s = CredentialStore {
            dir: dir.map(Path::to_path_buf),
            auth,
            state: RwLock::new(State::default()),
        };
        match s.reload_at(Timestamp::now()) {
            Reload::Rejected(e) => {
                warn!(target: "security", error = %e, "exchange credentials not loaded")
            }
            Reload::Applied => {
                if let Some(r) = s.report() {
                    info!(target: "security", fingerprint = r.fingerprint.as_deref().unwrap_or(""), "exchange credentials loaded");
                }
            }
            Reload::Unchanged => {}
        }
        s
    }

    /// The verified set in use, if any (for an exchange adapter).
    pub fn current(&self) -> Option<Arc<CredentialSet>> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .active
            .as_ref()
            .map(|a| a.set.clone())
    }

    /// Checks the directory; on a change stages, verifies and swaps (see the module
    /// documentation).
    pub fn reload(&self) -> Reload {
        self.reload_at(Timestamp::now())
    }

    fn reload_at(&self, now: Timestamp) -> Reload {
        let Some(dir) = &self.dir else {
            return Reload::Unchanged;
        };
        let staged = read_snapshot(dir);
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let snapshot = match staged {
            Ok(s) => s,
            Err(e) => {
                // Reported once per outage; the next readable snapshot counts as a change.
                let msg = e.to_string();
                if st.seen.is_none() && st.last_error.as_deref() == Some(msg.as_str()) {
                    return Reload::Unchanged;
                }
                st.seen = None;
                st.last_change_seen = Some(now);
                st.last_error = Some(msg);
                return Reload::Rejected(e);
            }
        };
        if st.seen == Some(snapshot.digest) {
            return Reload::Unchanged;
        }
        st.seen = Some(snapshot.digest);
        st.last_change_seen = Some(now);
        // Verification may be a network call for a live exchange: the lock is held so
        // that no two checks interleave; readers of the report wait at most that long.
        match self.auth.verify(&snapshot.set) {
            Ok(()) => {
                let fingerprint = snapshot.set.fingerprint();
                st.active = Some(Active {
                    set: Arc::new(snapshot.set),
                    fingerprint,
                    loaded_at: now,
                });
                st.last_error = None;
                Reload::Applied
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                Reload::Rejected(e)
            }
        }
    }

    /// What `GET /api/v1/security` reports (`None` when no directory is configured).
    pub fn report(&self) -> Option<ExchangeCredentialsReport> {
        self.dir.as_ref()?;
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Some(ExchangeCredentialsReport {
            fingerprint: st.active.as_ref().map(|a| a.fingerprint.clone()),
            loaded_at: st.active.as_ref().map(|a| a.loaded_at.to_string()),
            last_change_seen: st.last_change_seen.map(|t| t.to_string()),
            last_error: st.last_error.clone(),
        })
    }

    /// Polls the directory every [`POLL`] until `stop` is set; `on_reload` sees every
    /// applied or rejected change (metrics).
    pub fn watch(&self, stop: &AtomicBool, on_reload: impl Fn(&Reload)) {
        if self.dir.is_none() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(POLL);
            let r = self.reload();
            match &r {
                Reload::Unchanged => continue,
                Reload::Applied => {
                    let fp = self
                        .report()
                        .and_then(|r| r.fingerprint)
                        .unwrap_or_default();
                    info!(target: "security", fingerprint = %fp, "exchange credentials changed: verified and in use");
                }
                Reload::Rejected(e) => {
                    warn!(target: "security", error = %e, "exchange credentials changed but were rejected; the previous set stays in use");
                }
            }
            on_reload(&r);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Writes a kubelet-style Secret volume: `..<n>/<key>`, `..data -> ..<n>`,
    /// `<key> -> ..data/<key>`, swapped with a rename like the kubelet's.
    fn publish(dir: &Path, n: u32, pairs: &[(&str, &str)]) {
        let snap = format!("..snap_{n}");
        std::fs::create_dir(dir.join(&snap)).unwrap();
        for (k, v) in pairs {
            std::fs::write(dir.join(&snap).join(k), v).unwrap();
            let link = dir.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("{DATA_LINK}/{k}"), &link).unwrap();
            }
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&snap, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(DATA_LINK)).unwrap();
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn staged_swap_applies_a_verified_set_and_keeps_the_old_one_on_rejection() {
        let d = tempfile::tempdir().unwrap();
        publish(
            d.path(),
            1,
            &[("apiKey", "key-one"), ("apiSecret", "secret-one\n")],
        );
        let s = CredentialStore::new(Some(d.path()), Box::new(SimulatedExchange));
        let first = s.report().unwrap();
        let fp1 = first.fingerprint.clone().unwrap();
        assert_eq!(fp1.len(), 12);
        assert_eq!(first.last_error, None);
        assert_eq!(s.current().unwrap().get("apiSecret"), Some("secret-one"));
        assert_eq!(s.reload_at(at(10)), Reload::Unchanged);

        publish(
            d.path(),
            2,
            &[("apiKey", "key-two"), ("apiSecret", "secret-two")],
        );
        assert_eq!(s.reload_at(at(20)), Reload::Applied);
        let second = s.report().unwrap();
        let fp2 = second.fingerprint.clone().unwrap();
        assert_ne!(fp1, fp2);
        assert_eq!(
            second.loaded_at.as_deref(),
            Some(at(20).to_string().as_str())
        );
        assert_eq!(s.current().unwrap().get("apiKey"), Some("key-two"));

        // An empty apiKey: rejected, the second set stays, the error names the key only.
        publish(
            d.path(),
            3,
            &[("apiKey", "  "), ("apiSecret", "secret-three")],
        );
        assert_eq!(
            s.reload_at(at(30)),
            Reload::Rejected(CredentialError::MissingKey("apiKey".into()))
        );
        let third = s.report().unwrap();
        assert_eq!(third.fingerprint.as_deref(), Some(fp2.as_str()));
        assert_eq!(third.loaded_at, second.loaded_at);
        assert_eq!(
            third.last_change_seen.as_deref(),
            Some(at(30).to_string().as_str())
        );
        let err = third.last_error.unwrap();
        assert!(
            err.contains("apiKey") && !err.contains("secret-three"),
            "{err}"
        );
        assert_eq!(s.current().unwrap().get("apiKey"), Some("key-two"));
        // The rejected set is not re-verified at every poll.
        assert_eq!(s.reload_at(at(32)), Reload::Unchanged);

        // A fixed set is applied and clears the error.
        publish(
            d.path(),
            4,
            &[("apiKey", "key-four"), ("apiSecret", "secret-four")],
        );
        assert_eq!(s.reload_at(at(40)), Reload::Applied);
        let fourth = s.report().unwrap();
        assert_eq!(fourth.last_error, None);
        assert_ne!(fourth.fingerprint.as_deref(), Some(fp2.as_str()));
    }

    #[test]
    fn a_refusing_exchange_keeps_the_old_set() {
        struct Refuses;
        impl ExchangeAuth for Refuses {
            fn verify(&self, set: &CredentialSet) -> Result<(), CredentialError> {
                match set.get("apiKey") {
                    Some("revoked") => Err(CredentialError::Refused("401 invalid key".into())),
                    _ => set.well_formed(),
                }
            }
        }
        let d = tempfile::tempdir().unwrap();
        publish(d.path(), 1, &[("apiKey", "good"), ("apiSecret", "s")]);
        let s = CredentialStore::new(Some(d.path()), Box::new(Refuses));
        let fp = s.report().unwrap().fingerprint;
        publish(d.path(), 2, &[("apiKey", "revoked"), ("apiSecret", "s")]);
        assert!(matches!(
            s.reload_at(at(5)),
            Reload::Rejected(CredentialError::Refused(_))
        ));
        assert_eq!(s.report().unwrap().fingerprint, fp);
        assert_eq!(s.current().unwrap().get("apiKey"), Some("good"));
    }

    #[test]
    fn invalid_at_start_loads_nothing_and_missing_dir_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        publish(d.path(), 1, &[("apiKey", "k")]);
        let s = CredentialStore::new(Some(d.path()), Box::new(SimulatedExchange));
        let r = s.report().unwrap();
        assert_eq!(r.fingerprint, None);
        assert!(r.last_error.unwrap().contains("apiSecret"));
        assert!(s.current().is_none());

        let gone = CredentialStore::new(
            Some(Path::new("/nonexistent/iq720/exchange")),
            Box::new(SimulatedExchange),
        );
        assert!(
            gone.report()
                .unwrap()
                .last_error
                .unwrap()
                .contains("cannot read")
        );
        assert_eq!(gone.reload(), Reload::Unchanged, "one report per outage");

        let none = CredentialStore::new(None, Box::new(SimulatedExchange));
        assert!(none.report().is_none());
    }

    #[test]
    fn fingerprint_depends_on_names_and_values_and_debug_hides_values() {
        let a = CredentialSet::from_pairs([("apiKey", "k"), ("apiSecret", "s")]);
        let b = CredentialSet::from_pairs([("apiKey", "k"), ("apiSecret", "t")]);
        let c = CredentialSet::from_pairs([("apiKey", "k"), ("other", "s")]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert!(a.fingerprint().chars().all(|c| c.is_ascii_hexdigit()));
        let dbg = format!("{a:?}");
        assert!(dbg.contains("apiKey") && !dbg.contains("\"s\""), "{dbg}");
    }
}
