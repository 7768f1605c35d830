//! The pure build step: TradingBot spec → desired owned objects. No client, no I/O
//! ; one module per owned object.

pub mod bot_config;
pub mod config_map;
pub mod labels;
pub mod network_policy;
pub mod report_map;
pub mod service;
pub mod stateful_set;

use iq720_crds::TradingBot;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// A build step failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The object has no namespace, name or uid (not yet stored by the apiserver).
    #[error("TradingBot has no {0}")]
    MissingMetadata(&'static str),
    /// A document could not be rendered.
    #[error("cannot render bot configuration: {0}")]
    Render(String),
}

/// Identity of the TradingBot that owns the built objects.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Name of the TradingBot.
    pub name: String,
    /// Namespace of the TradingBot and of everything it owns.
    pub namespace: String,
    /// Controller owner reference pointing at the TradingBot.
    pub reference: OwnerReference,
}

impl Owner {
    /// Metadata of an owned object: name, namespace, common labels, owner reference.
    pub fn metadata(&self, name: String) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels::common_labels(&self.name)),
            owner_references: Some(vec![self.reference.clone()]),
            ..kube::api::ObjectMeta::default()
        }
    }

    /// Owner identity of a stored TradingBot.
    pub fn of(bot: &TradingBot) -> Result<Self, BuildError> {
        let namespace = bot
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let reference = bot
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(Self {
            name: bot.name_any(),
            namespace,
            reference,
        })
    }
}

/// Everything the operator applies for one bot (the token Secret is created separately,
/// once, because its content is generated).
#[derive(Debug, Clone)]
pub struct DesiredObjects {
    /// Rendered configuration (hot part is applied through the bot API).
    pub config: bot_config::RenderedConfig,
    /// ConfigMap with the configuration.
    pub config_map: k8s_openapi::api::core::v1::ConfigMap,
    /// Headless Service.
    pub service: k8s_openapi::api::core::v1::Service,
    /// NetworkPolicy.
    pub network_policy: k8s_openapi::api::networking::v1::NetworkPolicy,
    /// StatefulSet.
    pub stateful_set: k8s_openapi::api::apps::v1::StatefulSet,
}

/// Builds every desired object of a bot; `ingress` says whom its NetworkPolicy admits
/// (the operator's settings).
pub fn desired(
    bot: &TradingBot,
    replicas: i32,
    ingress: &crate::shared::context::BotIngress,
) -> Result<DesiredObjects, BuildError> {
    let owner = Owner::of(bot)?;
    let config = bot_config::render(bot, &owner.namespace, &owner.name);
    Ok(DesiredObjects {
        config_map: config_map::build(&owner, &config)?,
        service: service::build(&owner),
        network_policy: network_policy::build(&owner, ingress),
        stateful_set: stateful_set::build(&owner, bot, &config.restart_checksum, replicas),
        config,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use iq720_crds::TradingBotSpec;
    use serde_json::json;

    fn stored_bot(spec: serde_json::Value) -> TradingBot {
        let spec: TradingBotSpec = serde_json::from_value(spec).unwrap();
        let mut bot = TradingBot::new("alpha", spec);
        bot.metadata.namespace = Some("trading".into());
        bot.metadata.uid = Some("1234".into());
        bot
    }

    #[test]
    fn every_object_is_owned_and_labelled() {
        let bot = stored_bot(json!({"version": "0.1.0", "pairs": ["BTC/USDT"]}));
        let d = desired(&bot, 1, &Default::default()).unwrap();
        let metas = [
            &d.config_map.metadata,
            &d.service.metadata,
            &d.network_policy.metadata,
            &d.stateful_set.metadata,
        ];
        for meta in metas {
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].uid, "1234");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("trading"));
            assert_eq!(meta.labels.as_ref().unwrap()[labels::BOT_LABEL], "alpha");
        }
    }

    #[test]
    fn stateful_set_runs_one_pod_with_restricted_security() {
        let bot = stored_bot(json!({"version": "0.2.0", "pairs": ["BTC/USDT"]}));
        let sts = desired(&bot, 1, &Default::default()).unwrap().stateful_set;
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/iq720/iq720-bot:0.2.0"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        let env = c.env.as_ref().unwrap();
        let listen = env.iter().find(|e| e.name == "IQ720_LISTEN_ADDR").unwrap();
        assert_eq!(listen.value.as_deref(), Some("$(POD_IP):8080"));
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[labels::CONFIG_CHECKSUM_ANNOTATION].len(), 64);
    }

    #[test]
    fn emergency_stop_builds_zero_replicas() {
        let bot = stored_bot(json!({"version": "0.1.0", "pairs": ["BTC/USDT"]}));
        let sts = desired(&bot, 0, &Default::default()).unwrap().stateful_set;
        assert_eq!(sts.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn live_credentials_are_mounted_not_put_in_env() {
        let bot = stored_bot(
            json!({"version": "0.1.0", "pairs": ["BTC/USDT"], "mode": "live",
            "exchange": {"name": "binance", "credentialsSecretRef": {"name": "keys"}}}),
        );
        let d = desired(&bot, 1, &Default::default()).unwrap();
        let pod = d.stateful_set.spec.unwrap().template.spec.unwrap();
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "exchange-credentials")
            .unwrap();
        assert_eq!(vol.secret.unwrap().secret_name.as_deref(), Some("keys"));
        let env = serde_json::to_string(&pod.containers[0].env).unwrap();
        assert!(
            !env.contains("keys"),
            "credentials must not be referenced from env"
        );
        assert!(d.config.to_yaml().unwrap().contains("credentialsDir"));
    }

    #[test]
    fn missing_uid_is_an_error_not_a_panic() {
        let spec: TradingBotSpec =
            serde_json::from_value(json!({"version": "0.1.0", "pairs": ["BTC/USDT"]})).unwrap();
        let mut bot = TradingBot::new("x", spec);
        bot.metadata.namespace = Some("n".into());
        assert!(matches!(
            desired(&bot, 1, &Default::default()),
            Err(BuildError::MissingMetadata("uid"))
        ));
    }
}
