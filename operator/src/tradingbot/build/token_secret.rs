//! The Secret holding the bot's API token. The token is generated once by the operator,
//! never logged, and mounted into the bot as a file.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

use super::Owner;
use super::labels::{TOKEN_KEY, token_secret_name};

/// Builds the token Secret around an already generated token.
pub fn build(owner: &Owner, token: &str) -> Secret {
    Secret {
        metadata: owner.metadata(token_secret_name(&owner.name)),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A new random token: 32 bytes from the OS CSPRNG, hex encoded.
pub fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token out of an existing Secret.
pub fn token_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = String::from_utf8(bytes.0.clone()).ok()?;
    let token = token.trim().to_string();
    (!token.is_empty()).then_some(token)
}
