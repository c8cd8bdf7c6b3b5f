//! Authentication at the gateway: JWT verification with pinned algorithms per issuer, and a
//! cache of verified tokens so the hot path does no signature check for a token seen before.

pub mod cache;
pub mod jwks;
pub mod jwt;

/// Who is calling, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `iss` of the token.
    pub issuer: String,
    /// `sub` of the token.
    pub subject: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `iat`, Unix seconds (0 when absent).
    pub issued_at: i64,
    /// `aud` of a JWT (empty for API keys): a token the gateway's authorization server
    /// bound to one route's resource is accepted on that route only.
    pub audiences: Vec<String>,
}

impl Identity {
    /// The user as sealed into session ids: unique across issuers.
    pub fn user_key(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }

    /// Does the caller hold at least one of `wanted`, as a role or as an OAuth scope?
    pub fn has_any_role(&self, wanted: &[String]) -> bool {
        wanted.is_empty()
            || wanted
                .iter()
                .any(|w| self.roles.iter().chain(self.scopes.iter()).any(|r| r == w))
    }
}

/// Why a request is not authenticated. The text goes to the client in
/// `WWW-Authenticate: error_description`, so it names the rule, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("tokens are not accepted in the query string")]
    TokenInQuery,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("the token's algorithm is not allowed for its issuer")]
    AlgorithmNotAllowed,
    #[error("the token's key id is unknown")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this resource (aud)")]
    WrongAudience,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token is invalid: {0}")]
    Invalid(&'static str),
}

/// What the gateway needs from its own identity service on the request path. Implemented by
/// `identity::IdentityService`; a trait so the proxy does not depend on its internals.
#[async_trait::async_trait]
pub trait IdentityProvider: Send + Sync {
    /// `iss` of the gateway's own tokens; API-key callers get the same issuer so a user's
    /// sessions are theirs whichever credential they present.
    fn issuer(&self) -> &str;
    /// The user behind an API key, or `None` for an unknown, revoked or expired key.
    async fn authenticate_api_key(&self, presented: &str) -> Result<Option<Identity>, String>;
    /// Was this access token of the gateway's own revoked (logout, role change, disable)?
    fn token_revoked(&self, user_id: &str, issued_at: i64) -> bool;
    /// Record a security event (a denied call) in the audit trail, without waiting: events
    /// go through a bounded queue and are dropped (and counted) when it is full.
    fn audit(
        &self,
        kind: &'static str,
        user_id: Option<&str>,
        ip: Option<String>,
        detail: serde_json::Value,
    );
    /// The user's stored credential for `service`, decrypted.
    async fn service_credential(
        &self,
        user_id: &str,
        service: &str,
    ) -> Result<Option<String>, String>;
}
