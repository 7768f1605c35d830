//! The HTTP client of every S3 client in the workspace (the bot's restore, the
//! operator's backups, the tests' MinIO checks).
//!
//! Why not aws-sdk-s3's default: its `default-https-client` feature compiles in
//! aws-lc, a second TLS crypto library next to ring (which kube's rustls already
//! uses). Only its text grew the operator's binary (and, page by page, its resident
//! memory); the same client with ring speaks the same TLS.

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// An HTTPS-capable client (plain HTTP endpoints work too) on rustls with ring;
/// trusted roots are the platform's, loaded when the S3 client first uses it.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
