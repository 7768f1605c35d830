//! Errors of the BackupSchedule controller.
//!
//! Two levels, because they are handled differently: [`Error`] fails a whole
//! reconcile (the apiserver could not be read or written) and goes to the controller's
//! backoff; [`BackupError`] fails one bot's backup attempt and is reported in status,
//! an Event and the backups metric while the other bots go on. Every variant maps to a
//! metric label, and [`BackupError::reason`] is the condition reason a user sees.

use crate::botlink::client::BotApiError;
use crate::botlink::token::TokenError;
use crate::shared::s3::S3Error;

/// Errors of a BackupSchedule reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The bot selector cannot be turned into a label selector.
    #[error("botSelector: {0}")]
    Selector(String),
    /// Serialisation of a status failed.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// Short label for the `reason` of the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Selector(_) => "selector",
            Error::Serde(_) => "serde",
        }
    }

    /// Whether retrying without a spec change cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(e)) => matches!(e.code, 400 | 403 | 422),
            Error::Kube(_) => false,
            Error::Selector(_) | Error::Serde(_) => true,
        }
    }
}

/// Why one bot's backup attempt failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The S3 credentials Secret is missing or lacks a key.
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// The bot's pod has no address or its token is missing.
    #[error("bot unavailable: {0}")]
    BotUnavailable(String),
    /// The bot's token Secret could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The bot's backup endpoint failed.
    #[error(transparent)]
    Bot(#[from] BotApiError),
    /// An S3 call failed (unreachable, access denied, no such bucket...).
    #[error("S3 {operation}: {message}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// What S3 (or the connection) said.
        message: String,
    },
    /// The attempt did not finish within its deadline.
    #[error("backup did not finish within {0:?}")]
    Deadline(std::time::Duration),
    /// The stored object failed verification.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Local scratch space for verification could not be used.
    #[error("scratch space: {0}")]
    Io(#[from] std::io::Error),
}

impl From<S3Error> for BackupError {
    fn from(e: S3Error) -> Self {
        match e {
            S3Error::Credentials(m) => BackupError::Credentials(m),
            S3Error::Api { operation, message } => BackupError::S3 { operation, message },
            S3Error::Deadline => BackupError::Deadline(std::time::Duration::ZERO),
            S3Error::Source(m) => BackupError::Bot(BotApiError::Unreachable(m)),
            S3Error::Io(e) => BackupError::Io(e),
        }
    }
}

impl BackupError {
    /// An S3 error from an SDK error, with its code and message but no request
    /// details (the SDK's error display never includes the secret key).
    pub fn s3<E>(operation: &'static str, e: &aws_sdk_s3::error::SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        S3Error::api(operation, e).into()
    }

    /// Condition reason and Event reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::Credentials(_) => "CredentialsInvalid",
            BackupError::BotUnavailable(_) | BackupError::Token(_) | BackupError::Bot(_) => {
                "BotUnavailable"
            }
            BackupError::S3 { message, .. }
                if message.contains("AccessDenied")
                    || message.contains("InvalidAccessKeyId")
                    || message.contains("SignatureDoesNotMatch") =>
            {
                "CredentialsInvalid"
            }
            BackupError::S3 { message, .. } if message.contains("NoSuchBucket") => "BucketMissing",
            BackupError::S3 { .. } => "StorageUnavailable",
            BackupError::Deadline(_) => "DeadlineExceeded",
            BackupError::Verify(_) => "VerificationFailed",
            BackupError::Io(_) => "ScratchSpace",
        }
    }

    /// Short label for the `result` of the backups metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            BackupError::Verify(_) => "verification_failed",
            BackupError::Deadline(_) => "deadline",
            BackupError::Credentials(_) => "credentials",
            BackupError::BotUnavailable(_) | BackupError::Token(_) | BackupError::Bot(_) => {
                "bot_unavailable"
            }
            BackupError::S3 { .. } => "s3",
            BackupError::Io(_) => "io",
        }
    }
}

/// Result alias of the BackupSchedule controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;
