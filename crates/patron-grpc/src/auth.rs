//! Authentication and authorization: every call to a Patron service names a principal with
//! scopes, and the scope its method needs ([`crate::methods`]) must be one of them.
//!
//! Credentials, in the order they are tried:
//! - `authorization: Bearer <api key>`: keys are configured by the SHA-256 of the key (hex), never
//!   the key itself, each with a name and scopes;
//! - `authorization: Bearer <JWT>`: verified against configured public keys or a JWKS file
//!   (signature, issuer, audience, expiry and not-before with a leeway); the principal is the
//!   `sub` claim, the scopes come from a claim (`scope` by default: a space-separated string or a
//!   list);
//! - a client certificate (mutual TLS) whose subject is mapped to a principal with scopes.
//!
//! No credential, or one that does not verify: UNAUTHENTICATED. A principal without the method's
//! scope: PERMISSION_DENIED, ErrorInfo reason `MISSING_SCOPE` with metadata `scope` and
//! `principal`. Credentials never reach logs or errors: a refused credential is described by its
//! kind only.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};

use crate::methods::method;
use crate::{Reason, error_details};

/// Who is calling, as established by a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's name, the JWT's `sub`, or the certificate mapping's name.
    pub name: String,
    pub kind: CredentialKind,
    pub scopes: BTreeSet<String>,
}

/// How a principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Jwt,
    Certificate,
}

impl Principal {
    /// How ledger entries and redemptions name their author: `api-key:NAME`, `jwt:SUB`,
    /// `cert:NAME`.
    pub fn audit_name(&self) -> String {
        let kind = match self.kind {
            CredentialKind::ApiKey => "api-key",
            CredentialKind::Jwt => "jwt",
            CredentialKind::Certificate => "cert",
        };
        format!("{kind}:{}", self.name)
    }
}

/// A configured API key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    pub scopes: BTreeSet<String>,
}

/// A client certificate subject mapped to a principal.
#[derive(Debug, Clone)]
pub struct CertificatePrincipal {
    /// The certificate's subject as Patron prints it (RFC 4514, e.g. `CN=crm,O=Example`).
    pub subject: String,
    pub name: String,
    pub scopes: BTreeSet<String>,
}

/// JWT verification.
#[derive(Clone)]
pub struct JwtVerifier {
    /// Keys by id (`kid`); a token without `kid` is tried against every key.
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    scope_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("scope_claim", &self.scope_claim)
            .finish()
    }
}

/// How a JWT verifier is configured.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// A JWKS document (`{"keys": [...]}`).
    pub jwks: Option<String>,
    /// PEM public keys (RSA, EC or Ed25519), tried for tokens without a `kid` or an unknown one.
    pub public_keys_pem: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// The claim holding the scopes; `scope` when empty.
    pub scope_claim: String,
}

fn pem_key(pem: &str) -> Result<(Algorithm, DecodingKey), String> {
    let bytes = pem.as_bytes();
    if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((Algorithm::RS256, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        return Ok((Algorithm::ES256, k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        return Ok((Algorithm::EdDSA, k));
    }
    Err("not an RSA, EC (P-256) or Ed25519 public key in PEM".into())
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(jwks) = &settings.jwks {
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_str(jwks).map_err(|e| format!("JWKS: {e}"))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key: {e}"))?;
                let alg = match jwk.common.key_algorithm {
                    Some(a) => Algorithm::from_str_lossy(&a.to_string())?,
                    None => match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                            Algorithm::ES256
                        }
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                            return Err("JWKS: symmetric keys are not accepted".into());
                        }
                    },
                };
                keys.push((jwk.common.key_id.clone(), alg, key));
            }
        }
        for pem in &settings.public_keys_pem {
            let (alg, key) = pem_key(pem)?;
            keys.push((None, alg, key));
        }
        if keys.is_empty() {
            return Err("JWT authentication needs a JWKS file or public keys".into());
        }
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
            scope_claim: if settings.scope_claim.is_empty() {
                "scope".into()
            } else {
                settings.scope_claim.clone()
            },
        })
    }

    /// The principal a token names, or why it does not verify (never quoting the token).
    fn verify(&self, token: &str) -> Result<Principal, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let mut last = "no configured key verifies the token";
        for (kid, alg, key) in &self.keys {
            if kid.is_some() && header.kid.is_some() && kid != &header.kid {
                continue;
            }
            if *alg != header.alg {
                continue;
            }
            let mut v = Validation::new(*alg);
            v.leeway = self.leeway_secs;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "sub"]);
            if let Some(i) = &self.issuer {
                v.set_issuer(&[i]);
            }
            match &self.audience {
                Some(a) => v.set_audience(&[a]),
                None => v.validate_aud = false,
            }
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &v) {
                Ok(data) => {
                    let claims = data.claims;
                    let name = claims
                        .get("sub")
                        .and_then(|s| s.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let scopes = match claims.get(&self.scope_claim) {
                        Some(serde_json::Value::String(s)) => {
                            s.split_whitespace().map(str::to_owned).collect()
                        }
                        Some(serde_json::Value::Array(a)) => a
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                        _ => BTreeSet::new(),
                    };
                    return Ok(Principal {
                        name,
                        kind: CredentialKind::Jwt,
                        scopes,
                    });
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not valid yet",
                        ErrorKind::InvalidIssuer => "token from another issuer",
                        ErrorKind::InvalidAudience => "token for another audience",
                        ErrorKind::InvalidSignature => "token signature does not verify",
                        ErrorKind::MissingRequiredClaim(_) => "token lacks exp or sub",
                        _ => "token does not verify",
                    };
                }
            }
        }
        Err(last)
    }
}

trait AlgorithmExt: Sized {
    fn from_str_lossy(s: &str) -> Result<Self, String>;
}

impl AlgorithmExt for Algorithm {
    fn from_str_lossy(s: &str) -> Result<Self, String> {
        s.parse::<Algorithm>()
            .map_err(|_| format!("JWKS: unsupported algorithm {s}"))
    }
}

/// Everything the authenticator needs.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Off: every call is allowed (the embedded quickstart and the demo).
    pub enabled: bool,
    pub api_keys: Vec<ApiKey>,
    pub jwt: Option<JwtSettings>,
    pub certificates: Vec<CertificatePrincipal>,
    /// Health checks without credentials (load balancers, Kubernetes probes).
    pub open_health: bool,
    /// Server reflection without credentials (`buf curl`, `grpcurl`).
    pub open_reflection: bool,
}

/// What the transport knows of the caller: its address and, over mutual TLS, its certificate's
/// subject; and the places its calls hold (admission's per-connection limits). The transport makes
/// one per connection (its `ConnectInfo`) and tonic copies it into every request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionPeer {
    pub remote_addr: Option<std::net::SocketAddr>,
    pub subject: Option<String>,
    pub slots: crate::admission::ConnectionSlots,
}

/// Checks credentials and scopes.
#[derive(Debug)]
pub struct Authenticator {
    enabled: bool,
    /// Principals by the SHA-256 of their key, made once: a call clones an `Arc`, nothing more.
    keys: HashMap<[u8; 32], Arc<Principal>>,
    jwt: Option<JwtVerifier>,
    certificates: HashMap<String, Arc<Principal>>,
    open_health: bool,
    open_reflection: bool,
}

/// The SHA-256 of a key, hex: what the configuration holds.
pub fn key_hash_hex(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn unauthenticated(why: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        format!("authentication required: {why}; send `authorization: Bearer <API key or JWT>`"),
        error_details(Reason::Unauthenticated, HashMap::new()),
    )
}

fn missing_scope(scope: &str, principal: &Principal) -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        format!(
            "{} may not call this method: it needs the scope {scope}",
            principal.audit_name()
        ),
        error_details(
            Reason::MissingScope,
            HashMap::from([
                ("scope".to_owned(), scope.to_owned()),
                ("principal".to_owned(), principal.audit_name()),
            ]),
        ),
    )
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        let jwt = match &settings.jwt {
            Some(j) => Some(JwtVerifier::new(j)?),
            None => None,
        };
        let known: BTreeSet<&str> = crate::methods::SCOPES.iter().map(|(s, _)| *s).collect();
        let check = |owner: &str, scopes: &BTreeSet<String>| -> Result<(), String> {
            for s in scopes {
                if !known.contains(s.as_str()) {
                    return Err(format!("{owner}: unknown scope {s:?}"));
                }
            }
            Ok(())
        };
        let mut keys = HashMap::new();
        for k in &settings.api_keys {
            check(&format!("API key {}", k.name), &k.scopes)?;
            let principal = Arc::new(Principal {
                name: k.name.clone(),
                kind: CredentialKind::ApiKey,
                scopes: k.scopes.clone(),
            });
            if keys.insert(k.sha256, principal).is_some() {
                return Err(format!(
                    "API key {}: the same key is configured twice",
                    k.name
                ));
            }
        }
        let mut certificates = HashMap::new();
        for c in &settings.certificates {
            check(&format!("certificate {}", c.name), &c.scopes)?;
            certificates.insert(
                c.subject.clone(),
                Arc::new(Principal {
                    name: c.name.clone(),
                    kind: CredentialKind::Certificate,
                    scopes: c.scopes.clone(),
                }),
            );
        }
        if settings.enabled && keys.is_empty() && jwt.is_none() && certificates.is_empty() {
            return Err(
                "authentication is on but no API key, JWT key or certificate is configured".into(),
            );
        }
        Ok(Self {
            enabled: settings.enabled,
            keys,
            jwt,
            certificates,
            open_health: settings.open_health,
            open_reflection: settings.open_reflection,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The principal of a request's credentials.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&str>,
    ) -> Result<Arc<Principal>, Status> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| unauthenticated("the authorization header is not text"))?;
            let Some(token) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            else {
                return Err(unauthenticated(
                    "the authorization header is not a Bearer credential",
                ));
            };
            let token = token.trim();
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(k) = self.keys.get(&digest) {
                return Ok(Arc::clone(k));
            }
            if let Some(jwt) = &self.jwt
                && token.split('.').count() == 3
            {
                return jwt.verify(token).map(Arc::new).map_err(unauthenticated);
            }
            return Err(unauthenticated("unknown API key"));
        }
        if let Some(subject) = peer {
            if let Some(c) = self.certificates.get(subject) {
                return Ok(Arc::clone(c));
            }
            return Err(unauthenticated(
                "the client certificate is not mapped to a principal",
            ));
        }
        Err(unauthenticated("no credential"))
    }

    /// Checks a request for `path`: `Ok(None)` when no check applies (auth off, or an open
    /// service), `Ok(Some(principal))` when allowed.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<&str>,
    ) -> Result<Option<Arc<Principal>>, Status> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(m) = method(path) else {
            let open = (self.open_health && path.starts_with("/grpc.health.v1."))
                || (self.open_reflection && path.starts_with("/grpc.reflection."));
            if open {
                return Ok(None);
            }
            // Anything else outside Patron's services needs some valid credential.
            return self.authenticate(headers, peer).map(Some);
        };
        let principal = self.authenticate(headers, peer)?;
        if !principal.scopes.contains(m.scope) {
            return Err(missing_scope(m.scope, &principal));
        }
        Ok(Some(principal))
    }
}

/// The layer that runs [`Authenticator::check`] on every request and puts the principal
/// (`Arc<Principal>`) in the request's extensions for handlers (ledger entries name it).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B, RB> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    /// An admitted call runs as the inner call's own future; a refusal answers at once.
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<ConnectionPeer>()
            .and_then(|p| p.subject.clone());
        match self
            .auth
            .check(req.uri().path(), req.headers(), peer.as_deref())
        {
            Ok(principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                futures::future::Either::Left(self.inner.call(req))
            }
            Err(status) => {
                tracing::info!(path = req.uri().path(), code = ?status.code(), "call refused");
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str, scopes: &[&str]) -> ApiKey {
        ApiKey {
            name: name.into(),
            sha256: parse_hash(&key_hash_hex(secret)).expect("hash"),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn api_keys_and_scopes() {
        let a = Authenticator::new(&AuthSettings {
            enabled: true,
            api_keys: vec![key("crm", "s3cret-crm", &["scoring:read"])],
            open_health: true,
            open_reflection: true,
            ..Default::default()
        })
        .expect("valid");
        let path = "/patron.scoring.v1.ScoringService/GetCustomerValue";
        let p = a
            .check(path, &headers("Bearer s3cret-crm"), None)
            .expect("allowed")
            .expect("principal");
        assert_eq!(p.audit_name(), "api-key:crm");
        let denied = a
            .check(
                "/patron.loyalty.v1.LoyaltyService/AdjustPoints",
                &headers("Bearer s3cret-crm"),
                None,
            )
            .expect_err("no scope");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("loyalty:admin"));
        for bad in ["Bearer nope", "Basic abc", "Bearer "] {
            let e = a.check(path, &headers(bad), None).expect_err(bad);
            assert_eq!(e.code(), Code::Unauthenticated);
            assert!(!e.message().contains("nope"), "never quotes the credential");
        }
        let e = a
            .check(path, &http::HeaderMap::new(), None)
            .expect_err("none");
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(
            a.check(
                "/grpc.health.v1.Health/Check",
                &http::HeaderMap::new(),
                None
            )
            .expect("open")
            .is_none()
        );
    }

    /// A fixed Ed25519 test key pair (test data only).
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILFT+r98+4D4bu/YHbcPG3pIi571bu9VBBkXowurVMdh
-----END PRIVATE KEY-----
";
    const PUBLIC_SPKI_B64: &str = "MCowBQYDK2VwAyEA44ugEuwBx6Tg3xJ+N8dPrmvHh8N8AjmGH7oTVIVwj9Y=";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn token(kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_pem(PRIVATE.as_bytes()).expect("key"),
        )
        .expect("sign")
    }

    #[test]
    fn jwts_verify_against_a_jwks_file() {
        use base64::Engine;
        let spki = base64::engine::general_purpose::STANDARD
            .decode(PUBLIC_SPKI_B64)
            .expect("base64");
        // The raw Ed25519 key is the last 32 bytes of the SubjectPublicKeyInfo.
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]);
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}
        ]})
        .to_string();
        let a = Authenticator::new(&AuthSettings {
            enabled: true,
            jwt: Some(JwtSettings {
                jwks: Some(jwks),
                issuer: Some("https://idp.test".into()),
                audience: Some("patron".into()),
                leeway_secs: 5,
                scope_claim: "permissions".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("valid");
        let path = "/patron.segmentation.v1.SegmentationService/CountSegmentMembers";
        let claims = |iss: &str, aud: &str, exp: i64, scopes: serde_json::Value| serde_json::json!({"sub": "svc", "iss": iss, "aud": aud, "exp": exp, "permissions": scopes});
        let good = token(
            Some("k1"),
            claims(
                "https://idp.test",
                "patron",
                now() + 600,
                serde_json::json!(["segments:read"]),
            ),
        );
        let p = a
            .check(path, &headers(&format!("Bearer {good}")), None)
            .expect("allowed")
            .expect("principal");
        assert_eq!(p.audit_name(), "jwt:svc");
        for (why, t) in [
            (
                "expired",
                token(
                    Some("k1"),
                    claims(
                        "https://idp.test",
                        "patron",
                        now() - 600,
                        serde_json::json!(["segments:read"]),
                    ),
                ),
            ),
            (
                "issuer",
                token(
                    Some("k1"),
                    claims(
                        "https://other.test",
                        "patron",
                        now() + 600,
                        serde_json::json!(["segments:read"]),
                    ),
                ),
            ),
            (
                "audience",
                token(
                    Some("k1"),
                    claims(
                        "https://idp.test",
                        "billing",
                        now() + 600,
                        serde_json::json!(["segments:read"]),
                    ),
                ),
            ),
            (
                "unknown kid",
                token(
                    Some("k2"),
                    claims(
                        "https://idp.test",
                        "patron",
                        now() + 600,
                        serde_json::json!(["segments:read"]),
                    ),
                ),
            ),
            ("garbage", "a.b.c".to_owned()),
        ] {
            let e = a
                .check(path, &headers(&format!("Bearer {t}")), None)
                .expect_err(why);
            assert_eq!(e.code(), Code::Unauthenticated, "{why}");
        }
        let no_scope = token(
            Some("k1"),
            claims(
                "https://idp.test",
                "patron",
                now() + 600,
                serde_json::json!(["segments:write"]),
            ),
        );
        let e = a
            .check(path, &headers(&format!("Bearer {no_scope}")), None)
            .expect_err("scope");
        assert_eq!(e.code(), Code::PermissionDenied);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(
            Authenticator::new(&AuthSettings {
                enabled: true,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Authenticator::new(&AuthSettings {
                enabled: true,
                api_keys: vec![key("x", "k", &["scoring:wat"])],
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(parse_hash("zz"), None);
    }
}
