//! Types shared by the three custom resources: durations, secret references,
//! S3 locations and the CEL fragments that validate them.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL regular expression for a duration such as `30s`, `15m`, `1h30m` or `7d`.
///
/// Units: `ms`, `s`, `m`, `h`, `d`. Kubernetes' own CEL `duration()` has no day unit,
/// and day-scale retention periods read better as `7d` than `168h`, so durations are
/// strings checked by this pattern and parsed by the operator.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// CEL rule text that accepts a well-formed duration string.
pub const DURATION_RULE: &str = "self.matches('^([0-9]+(ms|s|m|h|d))+$')";

/// Human-readable message for a malformed duration.
pub const DURATION_MESSAGE: &str = "must be a duration made of a number and a unit (ms, s, m, h, d), for example 30s, 15m, 1h30m or 7d";

/// Reference to a Secret in the same namespace as the resource that names it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the namespace of the referring resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Reference to an object by name in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object, in the namespace of the referring resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An S3-compatible object store location with its credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Bucket name (3 to 63 lowercase letters, digits, dots or dashes).
    #[schemars(length(min = 3, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$')").message("bucket must be 3 to 63 lowercase letters, digits, dots or dashes, starting and ending with a letter or digit"))]
    pub bucket: String,
    /// Key prefix under which objects are written, for example `prod/bots`.
    /// Leading and trailing slashes are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Endpoint URL of an S3-compatible service such as MinIO, for example
    /// `http://minio.storage:9000`. Unset means AWS S3 for `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/ ]+(/.*)?$')").message("endpoint must be an http:// or https:// URL, for example http://minio.storage:9000"))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`;
    /// MinIO and most self-hosted services need this.
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret holding the access key id and secret access key.
    pub credentials_secret_ref: S3CredentialsRef,
}

/// Serde default `true`.
pub(crate) fn default_true() -> bool {
    true
}

/// Serde default time zone of schedules.
pub(crate) fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Secret keys that hold S3 credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Name of the Secret, in the namespace of the referring resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret that holds the access key id.
    #[serde(default = "default_access_key_key")]
    pub access_key_id_key: String,
    /// Key in the Secret that holds the secret access key.
    #[serde(default = "default_secret_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_key() -> String {
    "AWS_ACCESS_KEY_ID".to_string()
}

fn default_secret_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_string()
}
