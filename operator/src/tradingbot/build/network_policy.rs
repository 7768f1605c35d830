//! The NetworkPolicy that lets only the operator and metrics scrapers reach the bot.
//!
//! Why these selectors: the bot's API can halt trading and close positions, so the
//! policy admits as little as possible. The operator is recognised by the pod label
//! [`OPERATOR_POD_LABEL`], which the Helm chart sets on its pods whatever
//! `nameOverride`/`fullnameOverride` say (a label derived from the chart name would
//! silently lock the operator out after a rename), and only in the operator's own
//! namespace when it is known. Metrics scrapers are admitted only from the namespaces
//! the chart lists (`networkPolicy.metricsScraperNamespaces`), matched on the
//! immutable `kubernetes.io/metadata.name` namespace label, so a pod cannot grant
//! itself access by labelling itself in a namespace of its choosing.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::Owner;
use super::labels::{API_PORT, METRICS_SCRAPER_LABEL, selector_labels, workload_name};
use crate::shared::context::BotIngress;

/// Pod label (value `"true"`) by which the bots' NetworkPolicies recognise the
/// operator; set by the Helm chart on the operator's pods.
pub const OPERATOR_POD_LABEL: &str = "trading.iq720.io/operator";
/// Namespace label set by Kubernetes itself (immutable, equals the namespace name).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn labelled(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        ..LabelSelector::default()
    }
}

/// The admitted peers: the operator, then the scrapers (none when no namespace is
/// named).
fn peers(ingress: &BotIngress) -> Vec<NetworkPolicyPeer> {
    let operator_namespaces = match &ingress.operator_namespace {
        Some(ns) => labelled(NAMESPACE_NAME_LABEL, ns),
        None => LabelSelector::default(),
    };
    let mut peers = vec![NetworkPolicyPeer {
        namespace_selector: Some(operator_namespaces),
        pod_selector: Some(labelled(OPERATOR_POD_LABEL, "true")),
        ..NetworkPolicyPeer::default()
    }];
    if !ingress.metrics_scraper_namespaces.is_empty() {
        let mut names = ingress.metrics_scraper_namespaces.clone();
        names.sort();
        names.dedup();
        peers.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: NAMESPACE_NAME_LABEL.to_string(),
                    operator: "In".to_string(),
                    values: Some(names),
                }]),
                ..LabelSelector::default()
            }),
            pod_selector: Some(labelled(METRICS_SCRAPER_LABEL, "true")),
            ..NetworkPolicyPeer::default()
        });
    }
    peers
}

/// Builds the NetworkPolicy: ingress to the API port only from the operator's pods
/// (label [`OPERATOR_POD_LABEL`], in the operator's namespace when known) and from pods
/// labelled `trading.iq720.io/metrics-scraper: "true"` in the named scraper
/// namespaces. Egress is not restricted: the bot must reach its exchange.
pub fn build(owner: &Owner, ingress: &BotIngress) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.metadata(workload_name(&owner.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers(ingress)),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(API_PORT)),
                    protocol: Some("TCP".to_string()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner() -> Owner {
        Owner {
            name: "alpha".into(),
            namespace: "trading".into(),
            reference: OwnerReference {
                api_version: "trading.iq720.io/v1alpha1".into(),
                kind: "TradingBot".into(),
                name: "alpha".into(),
                uid: "1234".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn rule(np: &NetworkPolicy) -> NetworkPolicyIngressRule {
        let spec = np.spec.clone().unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1, "one rule: peers and ports combine");
        rules[0].clone()
    }

    fn match_labels(s: &Option<LabelSelector>) -> BTreeMap<String, String> {
        s.clone().unwrap().match_labels.unwrap_or_default()
    }

    #[test]
    fn admits_the_operator_by_the_chart_label_in_its_namespace_only() {
        let ingress = BotIngress {
            operator_namespace: Some("iq720-system".into()),
            metrics_scraper_namespaces: vec![],
        };
        let np = build(&owner(), &ingress);
        let r = rule(&np);
        let peers = r.from.unwrap();
        assert_eq!(
            peers.len(),
            1,
            "no scraper namespace named: only the operator"
        );
        let op = &peers[0];
        assert_eq!(
            match_labels(&op.pod_selector),
            BTreeMap::from([(OPERATOR_POD_LABEL.to_string(), "true".to_string())])
        );
        assert_eq!(
            match_labels(&op.namespace_selector),
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), "iq720-system".to_string())])
        );
        // not the chart-name label, which nameOverride changes
        let text = serde_json::to_string(&np).unwrap();
        assert!(
            !text.contains("app.kubernetes.io/name\":\"iq720-operator"),
            "{text}"
        );
        let ports = r.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, Some(IntOrString::Int(API_PORT)));
    }

    #[test]
    fn scrapers_only_from_the_named_namespaces() {
        let ingress = BotIngress {
            operator_namespace: None,
            metrics_scraper_namespaces: vec![
                "monitoring".into(),
                "obs".into(),
                "monitoring".into(),
            ],
        };
        let peers = rule(&build(&owner(), &ingress)).from.unwrap();
        assert_eq!(peers.len(), 2);
        // operator namespace unknown (runs outside a pod): its label in any namespace
        assert_eq!(peers[0].namespace_selector, Some(LabelSelector::default()));
        let scraper = &peers[1];
        assert_eq!(
            match_labels(&scraper.pod_selector),
            BTreeMap::from([(METRICS_SCRAPER_LABEL.to_string(), "true".to_string())])
        );
        let ns = scraper.namespace_selector.clone().unwrap();
        assert!(
            ns.match_labels.is_none(),
            "never an empty (all-namespaces) selector"
        );
        let expr = &ns.match_expressions.unwrap()[0];
        assert_eq!(expr.key, NAMESPACE_NAME_LABEL);
        assert_eq!(expr.operator, "In");
        assert_eq!(
            expr.values,
            Some(vec!["monitoring".to_string(), "obs".to_string()])
        );
    }

    #[test]
    fn selects_the_bot_pod_and_is_owned() {
        let np = build(&owner(), &BotIngress::default());
        assert_eq!(np.metadata.name.as_deref(), Some("alpha"));
        assert_eq!(np.metadata.namespace.as_deref(), Some("trading"));
        assert_eq!(
            np.metadata.owner_references.unwrap()[0].uid,
            "1234".to_string()
        );
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels,
            Some(selector_labels("alpha"))
        );
    }
}
