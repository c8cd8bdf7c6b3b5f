//! The `mcp-proxy user add` and `mcp-proxy token` subcommands, as blocking functions for
//! `main.rs`.

use std::time::Duration;

use super::{credentials_keys_from_env, crypto, IdentityConfig, IdentityError, IdentityService};
use crate::store::Store;

/// Default `iss` of the tokens the CLI prints (`MCP_GATEWAY_ISSUER`).
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";
/// Default `aud` of the tokens the CLI prints (`MCP_GATEWAY_AUDIENCE`).
pub const DEFAULT_AUDIENCE: &str = "http://127.0.0.1:8080/mcp";

/// Where the service lives and what its tokens say.
#[derive(Clone, Debug)]
pub struct CliTarget {
    pub database: String,
    pub issuer: String,
    pub audience: String,
}

fn runtime() -> Result<tokio::runtime::Runtime, IdentityError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IdentityError::Config(format!("cannot start a runtime: {e}")))
}

async fn open(target: &CliTarget) -> Result<std::sync::Arc<IdentityService>, IdentityError> {
    let keys = credentials_keys_from_env()?;
    let store = Store::connect(&target.database, true).await?;
    IdentityService::new(
        store,
        IdentityConfig::new(target.issuer.clone(), target.audience.clone(), keys),
    )
    .await
}

/// What `user add` did.
#[derive(Clone, Debug)]
pub struct AddedUser {
    pub id: String,
    pub email: String,
    pub roles: Vec<String>,
    /// The password, when it was generated (it is shown once).
    pub generated_password: Option<String>,
}

/// Creates a user; generates a password when none is given.
pub fn user_add(
    target: &CliTarget,
    email: &str,
    roles: &[String],
    password: Option<String>,
) -> Result<AddedUser, IdentityError> {
    runtime()?.block_on(async {
        let service = open(target).await?;
        let (password, generated) = match password {
            Some(p) => (p, false),
            // 24 base62 characters: about 143 bits, always of several classes in practice;
            // retried in the rare case it is not.
            None => {
                let mut p = crypto::random_base62(24);
                while super::check_password(&p).is_err() {
                    p = crypto::random_base62(24);
                }
                (p, true)
            }
        };
        let user = service.create_user(email, &password, roles).await?;
        service.store().close().await;
        Ok(AddedUser {
            id: user.id,
            email: user.email,
            roles: user.roles,
            generated_password: generated.then_some(password),
        })
    })
}

/// Prints-ready access token for the user named by id or email, with `roles` when given
/// (else the user's), valid for `ttl`. Creates the signing key when there is none.
pub fn token(
    target: &CliTarget,
    sub: &str,
    roles: &[String],
    ttl: Duration,
) -> Result<String, IdentityError> {
    runtime()?.block_on(async {
        let service = open(target).await?;
        let user = if sub.contains('@') {
            let email = super::normalize_email(sub).unwrap_or_else(|| sub.to_owned());
            service.store().find_user_by_email(&email).await?
        } else {
            service.store().get_user(sub).await?
        }
        .ok_or_else(|| IdentityError::UnknownUser(sub.to_owned()))?;
        let roles = (!roles.is_empty()).then_some(roles);
        let token = service
            .issue_access_token_with_roles(&user.id, roles, Some(ttl))
            .await?;
        service.store().close().await;
        Ok(token)
    })
}
