//! Write (and read) requests counted by the apiserver itself (`apiserver_request_total`).
//!
//! Why here: the operator's own counters could miss a write it did not mean to make;
//! the apiserver counts every request it served. The idle-cost e2e test and the scale
//! benchmark (`iq720-bench-scale`) both take two snapshots and compare them.
//!
//! The metric has no user label, so a request is attributed to the operator by its
//! resource: [`OPERATOR_RESOURCES`] are the objects only the operator writes in a test
//! namespace (kube-controller-manager's `statefulsets/status` and the node's
//! `pods/status` are not among them). POST is counted only for Secrets (the operator
//! creates token Secrets; kube-controller-manager POSTs a `kube-root-ca.crt` ConfigMap
//! into every new namespace). DELETE is not attributed: the operator's RBAC grants no
//! delete verb, and kube-controller-manager deletes whole namespaces of other tests.
//! [`grown`] keeps everything, for reports that list every writer.

use std::collections::BTreeMap;

use super::error::{HarnessError, Result};

/// Verbs that change state (server-side apply counts as `APPLY` or `PATCH`).
pub const WRITE_VERBS: [&str; 7] = [
    "POST", "PUT", "PATCH", "APPLY", "CREATE", "UPDATE", "DELETE",
];

/// Verbs of reads that are not watches (a watch is how the operator should read).
pub const READ_VERBS: [&str; 2] = ["GET", "LIST"];

/// Resources (with subresource) only the operator reads in a test namespace while no
/// test code runs: its own kinds (kube-controller-manager's garbage collector and
/// namespace controller read them too, but through watches, or only while a namespace
/// is deleted).
pub const OPERATOR_READ_RESOURCES: [(&str, &str); 3] = [
    ("maintenancewindows", ""),
    ("backupschedules", ""),
    ("tradingbots", ""),
];

/// Resources (with subresource) the operator writes.
pub const OPERATOR_RESOURCES: [(&str, &str); 8] = [
    ("statefulsets", ""),
    ("configmaps", ""),
    ("services", ""),
    ("networkpolicies", ""),
    ("secrets", ""),
    ("persistentvolumeclaims", ""),
    ("tradingbots", ""),
    ("tradingbots", "status"),
];

/// One counter of `apiserver_request_total`, summed over the labels not kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// `PATCH`, `APPLY`, `POST`, ...
    pub verb: String,
    /// Plural resource name, e.g. `tradingbots`.
    pub resource: String,
    /// Subresource, e.g. `status`, or empty.
    pub subresource: String,
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.verb, self.resource, self.subresource)
    }
}

impl RequestKey {
    /// Whether the operator makes this kind of write (see the module docs).
    pub fn is_operators(&self) -> bool {
        match self.verb.as_str() {
            "DELETE" => return false,
            "POST" if self.resource != "secrets" => return false,
            _ => {}
        }
        OPERATOR_RESOURCES.contains(&(self.resource.as_str(), self.subresource.as_str()))
    }
}

/// Write-request totals by verb and resource.
pub type WriteCounts = BTreeMap<RequestKey, f64>;

fn label<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    // a label name must start the label, not end another one (`subresource` vs `resource`)
    let mut from = 0;
    while let Some(i) = line[from..].find(&key) {
        let at = from + i;
        let prev = line[..at].chars().last();
        if matches!(prev, Some('{') | Some(',')) {
            return line[at + key.len()..].split('"').next().unwrap_or("");
        }
        from = at + key.len();
    }
    ""
}

/// Parses the write requests out of the apiserver's Prometheus text.
pub fn parse_writes(text: &str) -> WriteCounts {
    parse_requests(text, &WRITE_VERBS)
}

/// Parses the requests with one of `verbs` out of the apiserver's Prometheus text.
pub fn parse_requests(text: &str, verbs: &[&str]) -> WriteCounts {
    let mut out = WriteCounts::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        let verb = label(line, "verb");
        if !verbs.contains(&verb) {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let key = RequestKey {
            verb: verb.to_string(),
            resource: label(line, "resource").to_string(),
            subresource: label(line, "subresource").to_string(),
        };
        *out.entry(key).or_default() += value;
    }
    out
}

/// Reads the write-request totals from the apiserver's `/metrics`.
pub async fn apiserver_writes(client: &kube::Client) -> Result<WriteCounts> {
    Ok(parse_writes(&apiserver_metrics_text(client).await?))
}

/// Reads the GET and LIST totals from the apiserver's `/metrics`.
pub async fn apiserver_reads(client: &kube::Client) -> Result<WriteCounts> {
    Ok(parse_requests(
        &apiserver_metrics_text(client).await?,
        &READ_VERBS,
    ))
}

/// What grew among the reads of [`OPERATOR_READ_RESOURCES`].
pub fn operator_reads(before: &WriteCounts, after: &WriteCounts) -> WriteCounts {
    grown(before, after)
        .into_iter()
        .filter(|(k, _)| {
            OPERATOR_READ_RESOURCES.contains(&(k.resource.as_str(), k.subresource.as_str()))
        })
        .collect()
}

async fn apiserver_metrics_text(client: &kube::Client) -> Result<String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| HarnessError::Http {
            addr: "apiserver /metrics".to_string(),
            message: e.to_string(),
        })?;
    Ok(client.request_text(req).await?)
}

/// What grew between two snapshots (counters that did not grow are left out).
pub fn grown(before: &WriteCounts, after: &WriteCounts) -> WriteCounts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// The operator's share of [`grown`] (see [`RequestKey::is_operators`]).
pub fn operator_writes(before: &WriteCounts, after: &WriteCounts) -> WriteCounts {
    grown(before, after)
        .into_iter()
        .filter(|(k, _)| k.is_operators())
        .collect()
}

/// `PATCH tradingbots/status: +3, ...`, or `0` when empty.
pub fn describe(counts: &WriteCounts) -> String {
    if counts.is_empty() {
        return "0".to_string();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: +{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="trading.iq720.io",resource="tradingbots",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 7
apiserver_request_total{code="409",component="apiserver",dry_run="",group="trading.iq720.io",resource="tradingbots",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 4
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 99
"#;

    #[test]
    fn writes_are_summed_by_verb_and_resource_and_reads_left_out() {
        let w = parse_writes(TEXT);
        assert_eq!(w.len(), 3);
        let status = RequestKey {
            verb: "PATCH".into(),
            resource: "tradingbots".into(),
            subresource: "status".into(),
        };
        assert_eq!(w[&status], 8.0);
        assert!(status.is_operators());
    }

    #[test]
    fn only_the_operators_writes_are_attributed_to_it() {
        let after = parse_writes(TEXT);
        let ops = operator_writes(&WriteCounts::new(), &after);
        assert_eq!(describe(&ops), "PATCH tradingbots/status: +8");
        assert_eq!(grown(&after, &after), WriteCounts::new());
        assert_eq!(describe(&WriteCounts::new()), "0");
    }

    #[test]
    fn reads_of_the_operators_kinds_are_counted_apart() {
        let text = format!(
            "{TEXT}apiserver_request_total{{code=\"200\",component=\"apiserver\",group=\"trading.iq720.io\",resource=\"maintenancewindows\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1alpha1\"}} 12\n"
        );
        let reads = parse_requests(&text, &READ_VERBS);
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert_eq!(
            describe(&operator_reads(&WriteCounts::new(), &reads)),
            "LIST maintenancewindows/: +12",
            "pod GETs are the node's and the controllers', not attributed"
        );
    }
}
