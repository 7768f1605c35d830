//! The NetworkPolicy that lets only the operator and metrics scrapers reach the bot.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::Owner;
use super::labels::{API_PORT, METRICS_SCRAPER_LABEL, selector_labels, workload_name};

/// Builds the NetworkPolicy: ingress to the API port from pods labelled as the
/// operator (`app.kubernetes.io/name: iq720-operator`) or as metrics scrapers
/// (`trading.iq720.io/metrics-scraper: "true"`), in any namespace. Egress is not
/// restricted: the bot must reach its exchange.
pub fn build(owner: &Owner) -> NetworkPolicy {
    let peer = |key: &str, value: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: owner.metadata(workload_name(&owner.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    peer("app.kubernetes.io/name", "iq720-operator"),
                    peer(METRICS_SCRAPER_LABEL, "true"),
                ]),
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
