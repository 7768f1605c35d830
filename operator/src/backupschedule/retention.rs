//! Retention: which backups of a bot to delete, and deleting them.
//!
//! Rules (per bot, records newest first): the `keepLast` newest are kept; with
//! `maxAge`, older ones are kept while younger than `maxAge` (so `keepLast` is a
//! floor and `maxAge` expires what is beyond it; without `maxAge` exactly `keepLast`
//! are kept); the newest verified backup is always kept. Pruning runs only right
//! after a new backup of that bot was verified (or, with `verify: false`, stored),
//! never while backups fail. Only keys the operator recorded in status are
//! candidates, and each is checked to carry the operator's `iq720-managed-by`
//! metadata before it is deleted: objects someone else put under the prefix are
//! never touched. A status entry goes only together with its object.

use std::time::Duration;

use iq720_crds::backup_schedule::BackupRecord;
use jiff::Timestamp;

use super::error::BackupError;
use super::run::{MANAGED_BY, META_MANAGED_BY, S3Target};

fn completed(r: &BackupRecord) -> Timestamp {
    Timestamp::from_second(r.completed_at.0.as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Keys of `records` (one bot's, any order) that retention deletes at `now`.
pub fn plan(
    records: &[BackupRecord],
    keep_last: usize,
    max_age: Option<Duration>,
    now: Timestamp,
) -> Vec<String> {
    let mut sorted: Vec<&BackupRecord> = records.iter().collect();
    sorted.sort_by(|a, b| completed(b).cmp(&completed(a)).then(b.key.cmp(&a.key)));
    let newest_verified = sorted.iter().find(|r| r.verified).map(|r| r.key.clone());
    sorted
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let young =
                max_age.is_some_and(|max| now.duration_since(completed(r)).unsigned_abs().le(&max));
            let keep = *i < keep_last.max(1) || young || newest_verified.as_deref() == Some(&r.key);
            !keep
        })
        .map(|(_, r)| r.key.clone())
        .collect()
}

/// Outcome of deleting one key.
#[derive(Debug)]
pub enum Pruned {
    /// Deleted (or already gone): drop the status entry.
    Deleted,
    /// Not written by the operator (no `iq720-managed-by` metadata): the object is
    /// left alone and its status entry stays.
    NotOurs,
    /// Deletion failed; the entry stays and is retried after the next backup.
    Failed(BackupError),
}

/// Deletes `key` if the object carries the operator's metadata.
pub async fn delete_if_ours(s3: &S3Target, key: &str) -> Pruned {
    let head = s3
        .client
        .head_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await;
    match head {
        Ok(h) => {
            let ours = h
                .metadata()
                .and_then(|m| m.get(META_MANAGED_BY))
                .is_some_and(|v| v == MANAGED_BY);
            if !ours {
                return Pruned::NotOurs;
            }
        }
        Err(e) => {
            let gone = e
                .as_service_error()
                .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found);
            return if gone {
                Pruned::Deleted
            } else {
                Pruned::Failed(BackupError::s3("HeadObject", &e))
            };
        }
    }
    match s3
        .client
        .delete_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => Pruned::Deleted,
        Err(e) => Pruned::Failed(BackupError::s3("DeleteObject", &e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const DAY: i64 = 86_400;

    fn rec(key: &str, age_days: i64, verified: bool, now: Timestamp) -> BackupRecord {
        let at = now.as_second() - age_days * DAY;
        BackupRecord {
            bot: "b".into(),
            key: key.into(),
            size_bytes: 1,
            sha256: "x".into(),
            verified,
            verification_error: None,
            completed_at: Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap()),
        }
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let n = now();
        let r: Vec<_> = (0..5).map(|i| rec(&format!("k{i}"), i, true, n)).collect();
        let mut del = plan(&r, 3, None, n);
        del.sort();
        assert_eq!(del, vec!["k3", "k4"]);
        assert!(plan(&r, 5, None, n).is_empty());
        assert!(plan(&r, 100, None, n).is_empty());
    }

    #[test]
    fn max_age_expires_beyond_keep_last_only() {
        let n = now();
        let r: Vec<_> = [0, 2, 5, 10, 40]
            .iter()
            .map(|d| rec(&format!("d{d}"), *d, true, n))
            .collect();
        let mut del = plan(&r, 2, Some(Duration::from_secs(7 * DAY as u64)), n);
        del.sort();
        assert_eq!(del, vec!["d10", "d40"]);
        // everything older than maxAge but keepLast newest survive
        let old: Vec<_> = [30, 31, 32]
            .iter()
            .map(|d| rec(&format!("o{d}"), *d, true, n))
            .collect();
        assert_eq!(
            plan(&old, 1, Some(Duration::from_secs(DAY as u64)), n),
            vec!["o31", "o32"]
        );
    }

    #[test]
    fn the_newest_verified_backup_is_never_deleted() {
        let n = now();
        // Three newer backups failed verification; the verified one is older.
        let r = vec![
            rec("bad0", 0, false, n),
            rec("bad1", 1, false, n),
            rec("bad2", 2, false, n),
            rec("good", 3, true, n),
            rec("older", 4, true, n),
        ];
        let mut del = plan(&r, 1, None, n);
        del.sort();
        assert_eq!(del, vec!["bad1", "bad2", "older"]);
    }

    #[test]
    fn nothing_to_delete_for_no_records() {
        assert!(plan(&[], 1, None, now()).is_empty());
    }
}
