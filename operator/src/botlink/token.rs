//! The bot's API token: generated once by the operator, stored in a Secret owned by the
//! TradingBot, mounted into the bot as a file. Never logged, evented or put in status.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{BotRef, TOKEN_KEY};

/// Failure reading or creating the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The Secret could not be read or created.
    #[error("token Secret: {0}")]
    Kube(#[from] kube::Error),
    /// No randomness for a new token.
    #[error("cannot generate the bot API token: {0}")]
    Random(std::io::Error),
    /// A Secret with the token's name exists but is not the bot's.
    #[error("Secret {0} exists and is not owned by this bot; refusing to take it over")]
    NotOwned(String),
}

/// A new random token: 32 bytes from the OS CSPRNG, hex encoded.
pub fn generate() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token out of a Secret.
pub fn token_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = String::from_utf8(bytes.0.clone()).ok()?;
    let token = token.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// The token Secret holding `token`, with the given metadata (owner
/// reference and labels come from the owning controller).
pub fn secret(metadata: ObjectMeta, token: &str) -> Secret {
    Secret {
        metadata,
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Reads the bot's token, if its Secret exists and holds one.
pub async fn read(client: &Client, bot: &BotRef) -> Result<Option<String>, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &bot.namespace);
    Ok(api
        .get_opt(&bot.token_secret_name())
        .await?
        .as_ref()
        .and_then(token_of))
}

/// Returns the bot's token, creating its Secret once (with `metadata`, which must name
/// the Secret [`BotRef::token_secret_name`] and carry the owner reference). An existing
/// Secret for which `owned` is false is refused (the caller decides what owning means,
/// so this module needs nothing from the rest of the operator).
pub async fn ensure(
    client: &Client,
    bot: &BotRef,
    metadata: ObjectMeta,
    owned: impl Fn(&Secret) -> bool,
) -> Result<String, TokenError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &bot.namespace);
    let name = bot.token_secret_name();
    if let Some(existing) = api.get_opt(&name).await? {
        if !owned(&existing) {
            return Err(TokenError::NotOwned(name));
        }
        if let Some(token) = token_of(&existing) {
            return Ok(token);
        }
        // Ours but empty (edited by hand): put a fresh token in.
        let token = generate().map_err(TokenError::Random)?;
        let mut fixed = secret(metadata, &token);
        fixed.metadata.resource_version = existing.metadata.resource_version.clone();
        api.replace(&name, &PostParams::default(), &fixed).await?;
        return Ok(token);
    }
    let token = generate().map_err(TokenError::Random)?;
    api.create(&PostParams::default(), &secret(metadata, &token))
        .await?;
    Ok(token)
}
