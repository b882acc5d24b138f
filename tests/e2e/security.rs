//! Authentication and authorization over real gRPC: every RPC of the method table refuses calls
//! without a credential, with a wrong key, an expired JWT, a JWT of another issuer or key, and a
//! key without its scope; it admits the right scope. Health and reflection stay open. Ledger
//! entries name the authenticated principal.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use patron_grpc::auth::{ApiKey, AuthSettings, JwtSettings, key_hash_hex, parse_hash};
use patron_grpc::methods::{METHODS, SCOPES};
use patron_proto::loyalty::v1 as lpb;
use patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::support::{Backend, TestApp, purchase, spawn_app_with, ts};

/// A fixed Ed25519 test key pair (test data only).
const JWT_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILFT+r98+4D4bu/YHbcPG3pIi571bu9VBBkXowurVMdh
-----END PRIVATE KEY-----
";
const JWT_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA44ugEuwBx6Tg3xJ+N8dPrmvHh8N8AjmGH7oTVIVwj9Y=
-----END PUBLIC KEY-----
";
/// Another key nobody configured.
const OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDx/9I/ayCJJm2bc9blbsGvgMXlgYIi+Gf7V0/lYh4Yf
-----END PRIVATE KEY-----
";
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "patron";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn jwt(private: &str, issuer: &str, exp_offset: i64, scopes: &str) -> String {
    let claims = serde_json::json!({
        "sub": "svc-crm",
        "iss": issuer,
        "aud": AUDIENCE,
        "exp": now_secs() + exp_offset,
        "scope": scopes,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(private.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn key(name: &str, secret: &str, scopes: &[&str]) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: parse_hash(&key_hash_hex(secret)).expect("hash"),
        scopes: scopes
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
    }
}

/// One key per scope (`key-<scope>`), and `ops` with every loyalty scope.
fn auth_settings() -> AuthSettings {
    let mut api_keys: Vec<ApiKey> = SCOPES
        .iter()
        .map(|(s, _)| key(&format!("only-{s}"), &format!("key-{s}"), &[s]))
        .collect();
    api_keys.push(key(
        "ops",
        "key-ops",
        &[
            "loyalty:admin",
            "loyalty:read",
            "loyalty:redeem",
            "customers:write",
        ],
    ));
    AuthSettings {
        enabled: true,
        api_keys,
        jwt: Some(JwtSettings {
            public_keys_pem: vec![JWT_PUBLIC.into()],
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway_secs: 5,
            scope_claim: "scope".into(),
            ..Default::default()
        }),
        certificates: Vec::new(),
        open_health: true,
        open_reflection: true,
    }
}

/// Calls `path` with an empty message (valid for every request type) and `authorization`.
async fn call(channel: &Channel, path: &'static str, authorization: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(());
    if let Some(a) = authorization {
        request
            .metadata_mut()
            .insert("authorization", a.parse().expect("metadata"));
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc
        .unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

async fn secured(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.auth = auth_settings()).await
}

async fn every_rpc_checks_credentials_and_scopes(backend: Backend) {
    let app = secured(backend).await;
    let expired = jwt(JWT_PRIVATE, ISSUER, -3_600, "");
    let foreign_issuer = jwt(JWT_PRIVATE, "https://evil.test", 600, "");
    let foreign_key = jwt(OTHER_PRIVATE, ISSUER, 600, "");
    for m in METHODS {
        let refused = [
            None,
            Some("Bearer not-a-key".to_owned()),
            Some("Basic dXNlcjpwdw==".to_owned()),
            Some(format!(
                "Bearer {}",
                jwt(JWT_PRIVATE, ISSUER, -3_600, m.scope)
            )),
            Some(format!(
                "Bearer {}",
                jwt(JWT_PRIVATE, "https://evil.test", 600, m.scope)
            )),
            Some(format!(
                "Bearer {}",
                jwt(OTHER_PRIVATE, ISSUER, 600, m.scope)
            )),
        ];
        for auth in &refused {
            let status = call(&app.channel, m.path, auth.as_deref()).await;
            assert_eq!(status.code(), Code::Unauthenticated, "{} {auth:?}", m.path);
            let info = status.get_error_details();
            assert_eq!(
                info.error_info().map(|i| i.reason.as_str()),
                Some("UNAUTHENTICATED")
            );
            for secret in ["not-a-key", &expired, &foreign_issuer, &foreign_key] {
                assert!(
                    !status.message().contains(secret),
                    "never echoes a credential"
                );
            }
        }
        // A key with another scope: PERMISSION_DENIED naming the missing scope.
        let other = SCOPES
            .iter()
            .map(|(s, _)| *s)
            .find(|s| *s != m.scope)
            .expect("another scope");
        let status = call(&app.channel, m.path, Some(&format!("Bearer key-{other}"))).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{}", m.path);
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MISSING_SCOPE");
        assert_eq!(
            info.metadata.get("scope").map(String::as_str),
            Some(m.scope)
        );
        // The right scope, by key and by JWT: past authorization (whatever the empty request
        // then gets).
        for auth in [
            format!("Bearer key-{}", m.scope),
            format!("Bearer {}", jwt(JWT_PRIVATE, ISSUER, 600, m.scope)),
        ] {
            let status = call(&app.channel, m.path, Some(&auth)).await;
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "{} with its scope: {status:?}",
                m.path
            );
        }
    }
    // Health and reflection stay open.
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
}

fn with_key<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", "Bearer key-ops".parse().expect("metadata"));
    r
}

async fn ledger_entries_name_the_principal(backend: Backend) {
    let app = secured(backend).await;
    let mut loyalty = LoyaltyServiceClient::new(app.channel.clone());
    loyalty
        .create_program(with_key(lpb::CreateProgramRequest {
            program: Some(crate::loyalty::program("sec")),
        }))
        .await
        .expect("program");
    let mut customers =
        patron_proto::customers::v1::customer_service_client::CustomerServiceClient::new(
            app.channel.clone(),
        );
    customers
        .record_events(with_key(patron_proto::customers::v1::RecordEventsRequest {
            events: vec![purchase("pat", "p1", ts(300, 0), "o1", 1_000)],
        }))
        .await
        .expect("record");
    // The caller's free-text issuer is only a note; the principal is the issuer.
    loyalty
        .adjust_points(with_key(lpb::AdjustPointsRequest {
            program_id: "sec".into(),
            customer_id: "pat".into(),
            points: 50,
            reason: "goodwill".into(),
            issuer: "mallory".into(),
            request_id: "a1".into(),
        }))
        .await
        .expect("adjust");
    // Without a claimed issuer at all, too.
    loyalty
        .adjust_points(with_key(lpb::AdjustPointsRequest {
            program_id: "sec".into(),
            customer_id: "pat".into(),
            points: 5,
            reason: "more".into(),
            issuer: String::new(),
            request_id: "a2".into(),
        }))
        .await
        .expect("adjust without issuer");
    let entries = loyalty
        .list_ledger_entries(with_key(lpb::ListLedgerEntriesRequest {
            program_id: "sec".into(),
            customer_id: "pat".into(),
            page_size: 50,
            page_token: String::new(),
        }))
        .await
        .expect("ledger")
        .into_inner()
        .entries;
    let issuers: Vec<&str> = entries.iter().map(|e| e.issuer.as_str()).collect();
    assert!(
        issuers.contains(&"api-key:ops (note: mallory)"),
        "{issuers:?}"
    );
    assert!(issuers.contains(&"api-key:ops"), "{issuers:?}");
    assert!(!issuers.contains(&"mallory"), "{issuers:?}");
}

crate::both_backends!(
    every_rpc_checks_credentials_and_scopes,
    ledger_entries_name_the_principal
);
