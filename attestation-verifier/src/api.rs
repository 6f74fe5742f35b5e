//! The verifier's routes (docs/service-api.yaml).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::remote::valid_pod_id;
use crate::service::{state_of, RegisterError, Service};
use jek_service_client::wire::{
    AuditLog, Bundles, Health, HealthStatus, PodStates, PodStatus, RegisterRequest, Reloaded,
    SignedResult,
};
use jek_service_server::auth::{verifier_access, Clients, Principal};
use jek_service_server::http::ApiError;

/// The verifier's routes over `svc`, each open to the clients `clients` accepts with the
/// role the table in [`jek_service_server::auth::verifier_access`] gives it.
pub fn router(svc: Arc<Service>, clients: Clients) -> Router {
    let gate = jek_service_server::http::Gate {
        clients,
        access: verifier_access,
        realm: "jek-verifier",
    };
    gate.guard(
        Router::new()
            .route("/", get(|| async { Html(crate::page::PAGE) }))
            .route("/v1/health", get(health))
            .route("/v1/pods", get(list).post(register))
            .route("/v1/pods/{id}", get(one).delete(remove))
            .route("/v1/pods/{id}/result", get(result))
            .route("/v1/jwks", get(jwks))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/v1/bundles", get(bundles))
            .route("/v1/policy/reload", post(reload))
            .route("/v1/audit", get(audit)),
    )
    .with_state(svc)
}

fn store_error(e: &crate::store::StoreError) -> ApiError {
    use crate::store::StoreError;
    match e {
        StoreError::AlreadyRegistered { .. } => {
            return ApiError::new(StatusCode::CONFLICT, "already_registered", e.to_string())
        }
        StoreError::AkInUse { .. } => {
            return ApiError::new(StatusCode::CONFLICT, "ak_in_use", e.to_string())
        }
        StoreError::EkInUse { .. } => {
            return ApiError::new(StatusCode::CONFLICT, "ek_in_use", e.to_string())
        }
        StoreError::Database { .. } | StoreError::Corrupt { .. } => {}
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        e.to_string(),
    )
}

fn pod_id(id: &str) -> Result<(), ApiError> {
    if valid_pod_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "{id:?} is not a pod identifier (32 lowercase hex digits)"
        )))
    }
}

async fn health(State(svc): State<Arc<Service>>) -> Response {
    let pinged = svc.db(|s| s.ping()).await;
    let replica = svc.config.replica.clone();
    let rounds = svc.rounds.load(std::sync::atomic::Ordering::Relaxed);
    match pinged {
        Ok(()) => Json(Health {
            status: HealthStatus::Ok,
            error: None,
            replica,
            rounds,
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: HealthStatus::Unhealthy,
                error: Some(e.to_string()),
                replica,
                rounds,
            }),
        )
            .into_response(),
    }
}

async fn list(State(svc): State<Arc<Service>>) -> Result<Json<PodStates>, ApiError> {
    let rows = svc.db(|s| s.list()).await.map_err(|e| store_error(&e))?;
    Ok(Json(PodStates {
        pods: rows.iter().map(state_of).collect(),
    }))
}

async fn register(
    State(svc): State<Arc<Service>>,
    axum::Extension(by): axum::Extension<Principal>,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<jek_service_client::wire::PodState>), ApiError> {
    match svc.register(req, &by.who()).await {
        Ok(state) => {
            tracing::info!(id = %state.id, by = %by.who(), "pod registered");
            Ok((StatusCode::CREATED, Json(state)))
        }
        Err(e) => Err(match &e {
            RegisterError::Bad(_) => ApiError::bad_request(e.to_string()),
            RegisterError::UnknownBundle(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_bundle",
                e.to_string(),
            ),
            RegisterError::Agent(crate::remote::RemoteError::Answer { status: 404, .. }) => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_pod",
                    e.to_string(),
                )
            }
            RegisterError::Agent(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_unreachable", e.to_string())
            }
            RegisterError::Unproven(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "identity_unproven",
                e.to_string(),
            ),
            RegisterError::AgentFull { .. } => {
                ApiError::new(StatusCode::CONFLICT, "agent_full", e.to_string())
            }
            RegisterError::Store(s) => store_error(s),
        }),
    }
}

async fn one(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<jek_service_client::wire::PodState>, ApiError> {
    pod_id(&id)?;
    let key = id.clone();
    match svc.db(move |s| s.get(&key)).await {
        Ok(Some(row)) => Ok(Json(state_of(&row))),
        Ok(None) => Err(ApiError::not_found(format!("no registered pod {id}"))),
        Err(e) => Err(store_error(&e)),
    }
}

async fn remove(
    State(svc): State<Arc<Service>>,
    axum::Extension(by): axum::Extension<Principal>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    pod_id(&id)?;
    let key = id.clone();
    let notify = svc.config.webhook.is_some();
    let now = crate::service::now_s();
    let who = by.who();
    match svc.db(move |s| s.remove(&key, now, notify, &who)).await {
        Ok(Some(change)) => {
            tracing::warn!(
                id = %change.id,
                pod = %change.pod,
                last_status = %change.from,
                by = %by.who(),
                "pod removed from the fleet"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(None) => Err(ApiError::not_found(format!("no registered pod {id}"))),
        Err(e) => Err(store_error(&e)),
    }
}

async fn result(
    State(svc): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SignedResult>, ApiError> {
    pod_id(&id)?;
    let key = id.clone();
    let row = match svc.db(move |s| s.get(&key)).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(ApiError::not_found(format!("no registered pod {id}"))),
        Err(e) => return Err(store_error(&e)),
    };
    // The last round could not ask the pod: no result speaks for it now, whatever the
    // last one said.
    if row.result.status == PodStatus::Unreachable {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "pod_unreachable",
            format!(
                "pod {id} is unreachable: {}",
                row.result
                    .error
                    .as_deref()
                    .unwrap_or("its agent did not answer")
            ),
        ));
    }
    let Some(token) = row.result.token.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_result",
            format!(
                "pod {id} has no signed result yet (status {})",
                row.result.status
            ),
        ));
    };
    let now = crate::service::now_s();
    let checked = match jek_attest::signed::verify(&token, &svc.key.jwks(), now) {
        Err(jek_attest::signed::SignedError::UnknownKey { .. }) => {
            // Signed by another replica: its key is in the shared JWKS.
            let all = svc.db(|s| s.keys()).await.map_err(|e| store_error(&e))?;
            jek_attest::signed::verify(&token, &jwk_set(&all), now)
        }
        other => other,
    };
    let ear = match checked {
        Ok(ear) => ear,
        Err(e @ jek_attest::signed::SignedError::Expired { .. }) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "result_expired",
                format!("pod {id}'s last result is no longer valid: {e}"),
            ))
        }
        Err(e) => {
            return Err(ApiError::internal(format!(
                "the stored result does not verify: {e}"
            )))
        }
    };
    Ok(Json(SignedResult { token, ear }))
}

async fn audit(State(svc): State<Arc<Service>>) -> Result<Json<AuditLog>, ApiError> {
    let events = svc
        .db(|s| s.audit_log(crate::store::AUDIT_PAGE))
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(AuditLog { events }))
}

/// A JWKS from stored JWKs (any that does not parse is left out).
pub fn jwk_set(jwks: &[String]) -> jsonwebtoken::jwk::JwkSet {
    jsonwebtoken::jwk::JwkSet {
        keys: jwks
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect(),
    }
}

async fn jwks(
    State(svc): State<Arc<Service>>,
) -> Result<Json<jsonwebtoken::jwk::JwkSet>, ApiError> {
    let stored = svc.db(|s| s.keys()).await.map_err(|e| store_error(&e))?;
    let mut set = jwk_set(&stored);
    if !set
        .keys
        .iter()
        .any(|k| k.common.key_id.as_deref() == Some(svc.key.kid()))
    {
        set.keys.push(svc.key.jwk());
    }
    Ok(Json(set))
}

async fn bundles(State(svc): State<Arc<Service>>) -> Json<Bundles> {
    Json(Bundles {
        bundles: svc.judge().bundle_states(),
    })
}

async fn reload(
    State(svc): State<Arc<Service>>,
    axum::Extension(by): axum::Extension<Principal>,
) -> Result<Json<Reloaded>, ApiError> {
    let svc2 = svc.clone();
    let judge = tokio::task::spawn_blocking(move || svc2.reload())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "policy_invalid",
                format!(
                    "the policy was not reloaded: {}",
                    jek_errors::chain_line(&e)
                ),
            )
        })?;
    tracing::info!(policy = %judge.policy_id, by = %by.who(), "policy reloaded");
    let event = jek_service_client::wire::AuditEvent {
        at: crate::service::now_s(),
        by: by.who(),
        action: jek_service_client::wire::AuditAction::PolicyReloaded,
        id: None,
        pod: None,
        detail: Some(judge.policy_id.clone()),
    };
    let notify = svc.config.webhook.is_some();
    // The new policy is in force whether or not its record lands; a store that is down
    // is answered as such, so the client knows the record is missing.
    svc.db(move |s| s.audit(&event, notify))
        .await
        .map_err(|e| store_error(&e))?;
    Ok(Json(Reloaded {
        policy_id: judge.policy_id.clone(),
        bundles: judge.bundle_states(),
    }))
}
