//! The StatefulSet that runs the bot.
//!
//! Why a StatefulSet of one replica: a StatefulSet creates the pod of an ordinal only
//! after the previous pod of that ordinal is completely gone (its identity `NAME-0` is
//! unique in the namespace), so a rolling update or a rescheduling never has two bot
//! pods running at once — unlike a Deployment, whose rolling update starts the new pod
//! before the old one stops. Two pods of one bot would place orders twice.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, LocalObjectReference, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use iq720_crds::TradingBot;
use iq720_crds::common::S3Location;

use super::Owner;
use super::bot_config::{
    CONFIG_DIR, CONFIG_FILE, DATA_DIR, EXCHANGE_CREDENTIALS_DIR, LOG_DIR, TOKEN_DIR,
};
use super::labels::{
    API_PORT, API_PORT_NAME, CONFIG_CHECKSUM_ANNOTATION, common_labels, config_map_name,
    selector_labels, token_secret_name, workload_name,
};

/// Name of the volume claim template of the trade database.
pub const DATA_VOLUME: &str = "data";
/// Name of the bot container.
pub const CONTAINER: &str = "bot";
/// Grace period the bot gets to stop cleanly (flush SQLite, finish an order).
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

/// Builds the StatefulSet. `replicas` is 1 normally and 0 after an emergency stop.
pub fn build(owner: &Owner, bot: &TradingBot, config_checksum: &str, replicas: i32) -> StatefulSet {
    let spec = &bot.spec;
    let name = &owner.name;
    let labels = common_labels(name);
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(API_PORT_NAME.to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let mut env = vec![
        env_field("POD_IP", "status.podIP"),
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env_value("IQ720_LISTEN_ADDR", &format!("$(POD_IP):{API_PORT}")),
        env_value("IQ720_DATA_DIR", DATA_DIR),
        env_value("IQ720_LOG_DIR", LOG_DIR),
        env_value("IQ720_TOKEN_DIR", TOKEN_DIR),
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("api-token", TOKEN_DIR, true),
        mount(DATA_VOLUME, DATA_DIR, false),
        mount("logs", LOG_DIR, false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "api-token".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(token_secret_name(name)),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "logs".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let Some(creds) = &spec.exchange.credentials_secret_ref {
        // The path as a variable too (it is in the config file as well): a runtime that
        // maps mounts elsewhere rewrites variables, not file contents.
        env.push(env_value(
            "IQ720_EXCHANGE_CREDENTIALS_DIR",
            EXCHANGE_CREDENTIALS_DIR,
        ));
        mounts.push(mount(
            "exchange-credentials",
            EXCHANGE_CREDENTIALS_DIR,
            true,
        ));
        volumes.push(Volume {
            name: "exchange-credentials".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(creds.name.clone()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(format!("{}:{}", spec.image.repository, spec.version)),
        image_pull_policy: Some(format!("{:?}", spec.image.pull_policy)),
        args: Some(vec![
            "run".to_string(),
            "--config".to_string(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(API_PORT_NAME.to_string()),
            container_port: API_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(http_probe("/healthz", 1, 60)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pull_secrets: Vec<LocalObjectReference> = spec
        .image
        .pull_secrets
        .iter()
        .map(|s| LocalObjectReference {
            name: s.name.clone(),
        })
        .collect();
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOncePod".to_string()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(workload_name(name)),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.reference.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(workload_name(name)),
            // OrderedReady plus a single ordinal: pod NAME-0 is only recreated after
            // the old one is fully terminated.
            pod_management_policy: Some("OrderedReady".to_string()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // The trade database outlives the TradingBot: deleting a bot by mistake
            // must not delete its trading history.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_CHECKSUM_ANNOTATION.to_string(),
                        config_checksum.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Name of the init container that restores the trade database from a backup.
pub const RESTORE_CONTAINER: &str = "restore";

/// The backup a bot's pod restores before the bot first starts (`spec.restore`,
/// resolved and pinned by [`crate::tradingbot::restore`]). Holds no credentials: only
/// the name and keys of the Secret that has them.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSource {
    /// Object key of the backup.
    pub key: String,
    /// sha256 recorded at upload, when known (checked by the restore).
    pub sha256: Option<String>,
    /// The BackupSchedule's destination (bucket, endpoint, region, Secret ref).
    pub location: S3Location,
    /// Rollback restore: replace the database only when its schema is newer than the
    /// pod's release opens (`--if-schema-too-new`), instead of restoring only into an
    /// empty volume.
    pub if_schema_too_new: bool,
}

/// Adds the restore init container to a built StatefulSet: the bot image running
/// `iq720-bot restore --s3-key ...` on the data volume. It restores only into an
/// empty volume; a volume with a database is left alone and the init step succeeds,
/// saying so in its log. The S3 credentials reach it as environment variables from
/// the Secret (`secretKeyRef`), never as arguments.
pub fn add_restore(sts: &mut StatefulSet, source: &RestoreSource) {
    let Some(pod) = sts.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    let Some(bot) = pod.containers.iter().find(|c| c.name == CONTAINER) else {
        return;
    };
    let loc = &source.location;
    let mut args = vec![
        "restore".to_string(),
        "--data-dir".to_string(),
        DATA_DIR.to_string(),
        "--s3-bucket".to_string(),
        loc.bucket.clone(),
        "--s3-key".to_string(),
        source.key.clone(),
        "--s3-region".to_string(),
        loc.region.clone(),
    ];
    if let Some(endpoint) = &loc.endpoint {
        args.extend(["--s3-endpoint".to_string(), endpoint.clone()]);
    }
    if loc.force_path_style {
        args.push("--s3-path-style".to_string());
    }
    if let Some(sha) = &source.sha256 {
        args.extend(["--s3-sha256".to_string(), sha.clone()]);
    }
    if source.if_schema_too_new {
        args.push("--if-schema-too-new".to_string());
    }
    let refs = &loc.credentials_secret_ref;
    let init = Container {
        name: RESTORE_CONTAINER.to_string(),
        image: bot.image.clone(),
        image_pull_policy: bot.image_pull_policy.clone(),
        args: Some(args),
        env: Some(vec![
            env_secret("AWS_ACCESS_KEY_ID", &refs.name, &refs.access_key_id_key),
            env_secret(
                "AWS_SECRET_ACCESS_KEY",
                &refs.name,
                &refs.secret_access_key_key,
            ),
        ]),
        resources: bot.resources.clone(),
        volume_mounts: Some(vec![mount(DATA_VOLUME, DATA_DIR, false)]),
        security_context: bot.security_context.clone(),
        ..Container::default()
    };
    pod.init_containers = Some(vec![init]);
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod restore_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use iq720_crds::TradingBotSpec;

    fn built() -> StatefulSet {
        let spec: TradingBotSpec = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pairs": ["BTC/USDT"]
        }))
        .unwrap();
        let mut bot = TradingBot::new("alpha", spec);
        bot.metadata.namespace = Some("trading".into());
        bot.metadata.uid = Some("1234".into());
        let owner = Owner::of(&bot).unwrap();
        build(&owner, &bot, "sum", 1)
    }

    fn source() -> RestoreSource {
        let location: S3Location = serde_json::from_value(serde_json::json!({
            "bucket": "backups", "endpoint": "http://minio:9000", "forcePathStyle": true,
            "credentialsSecretRef": {"name": "s3-creds"}
        }))
        .unwrap();
        RestoreSource {
            key: "p/trading/alpha/20260101T030000.000Z.tar.gz".into(),
            sha256: Some("ab".repeat(32)),
            location,
            if_schema_too_new: false,
        }
    }

    #[test]
    fn the_restore_init_container_runs_the_bot_image_on_the_data_volume() {
        let mut sts = built();
        assert!(
            sts.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .init_containers
                .is_none()
        );
        add_restore(&mut sts, &source());
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.unwrap()[0];
        let bot = &pod.containers[0];
        assert_eq!(init.name, RESTORE_CONTAINER);
        assert_eq!(init.image, bot.image);
        assert_eq!(init.security_context, bot.security_context);
        let args = init.args.clone().unwrap();
        assert_eq!(
            args,
            [
                "restore",
                "--data-dir",
                DATA_DIR,
                "--s3-bucket",
                "backups",
                "--s3-key",
                "p/trading/alpha/20260101T030000.000Z.tar.gz",
                "--s3-region",
                "us-east-1",
                "--s3-endpoint",
                "http://minio:9000",
                "--s3-path-style",
                "--s3-sha256",
                &"ab".repeat(32),
            ]
        );
        let mounts = init.volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].name, DATA_VOLUME);
        assert_eq!(mounts[0].mount_path, DATA_DIR);
        assert_eq!(mounts[0].read_only, Some(false));
    }

    #[test]
    fn credentials_come_from_the_secret_by_reference_only() {
        let mut sts = built();
        add_restore(&mut sts, &source());
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.unwrap()[0];
        let env = init.env.clone().unwrap();
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        for e in &env {
            // no literal value: a reference to the Secret's key
            assert!(e.value.is_none(), "{e:?}");
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(r.name, "s3-creds");
        }
        let keys: Vec<_> = env
            .iter()
            .map(|e| {
                e.value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap()
                    .key
                    .clone()
            })
            .collect();
        assert_eq!(keys, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        // nothing credential-like anywhere else in the rendered pod
        let text = serde_json::to_string(&pod.containers).unwrap()
            + &serde_json::to_string(&init.args).unwrap();
        assert!(!text.to_lowercase().contains("secret_access"), "{text}");
    }
}
