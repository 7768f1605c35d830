//! The headless Service that gives the bot's pod a stable DNS name.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use super::labels::{API_PORT, API_PORT_NAME, selector_labels, workload_name};

/// Builds the headless Service.
pub fn build(owner: &Owner) -> Service {
    Service {
        metadata: owner.metadata(workload_name(&owner.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(&owner.name)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(API_PORT_NAME.to_string()),
                port: API_PORT,
                target_port: Some(IntOrString::String(API_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
