//! [`ApiClient`]: the `/v1` API of a cluster, typed, spoken to a list of controllers
//! with failover between them. One method per endpoint of `spec/api.md`, taking and
//! returning the `dabba_spec::api` and `dabba_spec::resources` types.
//!
//! Retries are only ever made when the request certainly had no effect: the connection
//! could not be made, or a controller answered 503 (`no_leader`, `unavailable`). A
//! request whose answer was lost after it was sent has an unknown outcome
//! ([`ApiError::Unknown`]); that is reported, never retried here, because a write may
//! have been committed. Callers whose writes carry an id the state machine deduplicates
//! (key-value writes) retry those themselves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dabba_spec::Digest;
use dabba_spec::analysis::AnalysisTemplate;
use dabba_spec::api::{
    ActivateRequest, ActivateResponse, AddMember, AnalysisTemplateView, AppDetail, AppSummary,
    CheckReport, ClusterStatus, CronJobApply, CronJobView, Empty, ErrorBody, Health, Heartbeat,
    HostView, KV_VALUES_BINARY, KvKeys, KvList, KvRead, KvValues, KvWrite, KvWriteResult,
    PeerToken, PreferredLeaderRegion, RegionMove, RegionView, Registered, RolloutAction,
    RolloutView, ScaleRequest, TokenRequest, TokenResponse, UndoRequest, WatchResponse,
};
use dabba_spec::cronjob::RunReport;
use dabba_spec::resources::{App, AppSpec, Host, HostInfo, Pod, ResourceKey, Revision};
use http::Method;
use http_body_util::Full;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::paths;
use crate::transport::{HttpClient, LEADER_HEADER, client, send};

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error.
    #[error("{message} ({status} {code})")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    /// No controller could be reached (or every one said it could not serve now).
    #[error("no controller answered: {0}")]
    Unavailable(String),
    /// A controller may have received the request, but its answer was lost: a write
    /// may or may not have happened.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    #[error("unexpected answer from the API: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`not_found`, `route_conflict`, ...), when it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How long adding a controller may take: the leader answers once the new controller
/// has caught up, which for a large workload store means a snapshot of gigabytes.
pub const MEMBER_CATCH_UP: Duration = Duration::from_secs(3600);

/// A client of the `/v1` API of a cluster: a list of controller URLs and a token.
pub struct ApiClient {
    http: HttpClient,
    servers: Vec<String>,
    /// Shared by the clients made with [`ApiClient::with_bounds`], so one
    /// [`ApiClient::set_token`] (a host given its own credential) changes them all.
    token: Arc<RwLock<Arc<str>>>,
    /// The server that answered last; tried first next time.
    preferred: AtomicUsize,
    /// How long to keep trying while no controller can serve (an election). By
    /// default 10 s.
    pub retry_for: Duration,
    /// The longest one request may take. By default 40 s (a watch waits up to 30 s).
    pub timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Clone for ApiClient {
    fn clone(&self) -> ApiClient {
        self.with_bounds(self.retry_for, self.timeout)
    }
}

impl ApiClient {
    pub fn new(servers: Vec<String>, token: String) -> ApiClient {
        ApiClient {
            http: client(),
            servers: servers
                .into_iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            token: Arc::new(RwLock::new(token.into())),
            preferred: AtomicUsize::new(0),
            retry_for: Duration::from_secs(10),
            timeout: Duration::from_secs(40),
        }
    }

    /// The controller to try on attempt `n` of a request: the one that answered last
    /// first, then the others in turn.
    pub(crate) fn server(&self, n: usize) -> &str {
        if self.servers.is_empty() {
            return "http://no-controller-configured.invalid";
        }
        let first = self.preferred.load(Ordering::Relaxed);
        &self.servers[(first + n) % self.servers.len()]
    }

    /// The token this client sends.
    pub fn token(&self) -> Arc<str> {
        self.token.read().expect("token lock").clone()
    }

    /// Sends `token` from now on, from this client and every client made from it with
    /// [`ApiClient::with_bounds`].
    pub fn set_token(&self, token: &str) {
        *self.token.write().expect("token lock") = token.into();
    }

    pub(crate) fn http(&self) -> &HttpClient {
        &self.http
    }

    /// A client of the same cluster with other retry and timeout bounds (sharing the
    /// connection pool), e.g. for periodic calls where the next call replaces a retry.
    pub fn with_bounds(&self, retry_for: Duration, timeout: Duration) -> ApiClient {
        ApiClient {
            http: self.http.clone(),
            servers: self.servers.clone(),
            token: self.token.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            retry_for,
            timeout,
        }
    }

    /// The same cluster, with another token.
    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient {
            token: Arc::new(RwLock::new(token.into())),
            ..self.clone()
        }
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    // --- the endpoints, in the order of spec/api.md ----------------------------------

    /// `GET /v1/healthz` of the first server alone (no failover: it asks whether that
    /// node serves).
    pub async fn healthz(&self) -> Result<Health, ApiError> {
        let one = ApiClient {
            servers: self.servers.iter().take(1).cloned().collect(),
            retry_for: Duration::ZERO,
            ..self.clone()
        };
        one.get(paths::HEALTHZ).await
    }

    /// `HEAD /v1/blobs/{digest}`: whether the cluster has the component.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, ApiError> {
        match self
            .request(Method::HEAD, &paths::blob(digest), Bytes::new(), WASM)
            .await
        {
            Ok(_) => Ok(true),
            Err(ApiError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/apps`, in `namespace` (`None`: every namespace the token covers).
    pub async fn apps(&self, namespace: Option<&str>) -> Result<Vec<AppSummary>, ApiError> {
        self.get(&paths::listing("apps", namespace, None)).await
    }

    /// `PUT /v1/apps/{ns}/{name}`: creates or changes an app.
    pub async fn apply_app(&self, spec: &AppSpec) -> Result<App, ApiError> {
        self.send_json(Method::PUT, &paths::app(&spec.key()), spec)
            .await
    }

    /// `GET /v1/apps/{ns}/{name}`.
    pub async fn app(&self, key: &ResourceKey) -> Result<AppDetail, ApiError> {
        self.get(&paths::app(key)).await
    }

    /// `POST /v1/apps/{ns}/{name}/activate` (hosts).
    pub async fn activate(
        &self,
        key: &ResourceKey,
        req: &ActivateRequest,
    ) -> Result<ActivateResponse, ApiError> {
        self.send_json(Method::POST, &paths::app_action(key, "activate"), req)
            .await
    }

    /// `DELETE /v1/apps/{ns}/{name}`.
    pub async fn delete_app(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.request(Method::DELETE, &paths::app(key), Bytes::new(), JSON)
            .await
            .map(drop)
    }

    /// `POST /v1/apps/{ns}/{name}/scale`.
    pub async fn scale_app(&self, key: &ResourceKey, replicas: u32) -> Result<App, ApiError> {
        self.send_json(
            Method::POST,
            &paths::app_action(key, "scale"),
            &ScaleRequest { replicas },
        )
        .await
    }

    /// `GET /v1/rollouts`, in `namespace` (`None`: every namespace the token covers).
    pub async fn rollouts(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ApiError> {
        self.get(&paths::listing("rollouts", namespace, None)).await
    }

    /// `GET /v1/apps/{ns}/{name}/rollout`.
    pub async fn rollout(&self, key: &ResourceKey) -> Result<RolloutView, ApiError> {
        self.get(&paths::app_action(key, "rollout")).await
    }

    /// `POST /v1/apps/{ns}/{name}/rollout`: promote, abort, retry, pause or resume.
    pub async fn rollout_action(
        &self,
        key: &ResourceKey,
        action: RolloutAction,
    ) -> Result<RolloutView, ApiError> {
        self.send_json(Method::POST, &paths::app_action(key, "rollout"), &action)
            .await
    }

    /// `POST /v1/apps/{ns}/{name}/undo`.
    pub async fn undo(&self, key: &ResourceKey, to_revision: Option<u64>) -> Result<App, ApiError> {
        self.send_json(
            Method::POST,
            &paths::app_action(key, "undo"),
            &UndoRequest { to_revision },
        )
        .await
    }

    /// `GET /v1/analysistemplates`, in `namespace` (`None`: every namespace the token
    /// covers).
    pub async fn analysis_templates(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<AnalysisTemplateView>, ApiError> {
        self.get(&paths::listing("analysistemplates", namespace, None))
            .await
    }

    /// `PUT /v1/analysistemplates/{ns}/{name}`.
    pub async fn apply_analysis_template(
        &self,
        namespace: &str,
        template: &AnalysisTemplate,
    ) -> Result<(), ApiError> {
        let key = ResourceKey::new(namespace, &template.name);
        self.send_json::<_, Empty>(Method::PUT, &paths::analysis_template(&key), template)
            .await
            .map(drop)
    }

    /// `DELETE /v1/analysistemplates/{ns}/{name}`.
    pub async fn delete_analysis_template(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.request(
            Method::DELETE,
            &paths::analysis_template(key),
            Bytes::new(),
            JSON,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/revisions`, narrowed to a namespace and an app.
    pub async fn revisions(
        &self,
        namespace: Option<&str>,
        app: Option<&str>,
    ) -> Result<Vec<Revision>, ApiError> {
        self.get(&paths::listing("revisions", namespace, app)).await
    }

    /// `PUT /v1/cronjobs/{ns}/{name}`.
    pub async fn apply_cron_job(&self, body: &CronJobApply) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::PUT, &paths::cron_job(&body.spec.key()), body)
            .await
            .map(drop)
    }

    /// `GET /v1/cronjobs`, in `namespace` (`None`: every namespace the token covers).
    pub async fn cron_jobs(&self, namespace: Option<&str>) -> Result<Vec<CronJobView>, ApiError> {
        self.get(&paths::listing("cronjobs", namespace, None)).await
    }

    /// `GET /v1/audit` (admins): the audit log's entries recorded at or after `since`
    /// (ms since the epoch), with the hash before the first.
    pub async fn audit(&self, since: u64) -> Result<dabba_spec::audit::AuditLog, ApiError> {
        self.get(&paths::audit(since)).await
    }

    /// `PUT /v1/audit/retention` (admins): keep audit entries at most `max_age_ms`
    /// (`None`: the newest 10,000, whatever their age).
    pub async fn set_audit_retention(&self, max_age_ms: Option<u64>) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(
            Method::PUT,
            "/v1/audit/retention",
            &dabba_spec::audit::AuditRetention { max_age_ms },
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/cronjobs/{ns}/{name}`.
    pub async fn delete_cron_job(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.request(Method::DELETE, &paths::cron_job(key), Bytes::new(), JSON)
            .await
            .map(drop)
    }

    /// `POST /v1/cronjobs/{ns}/{name}/suspend`.
    pub async fn suspend_cron_job(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.cron_job_action(key, "suspend").await
    }

    /// `POST /v1/cronjobs/{ns}/{name}/resume`.
    pub async fn resume_cron_job(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.cron_job_action(key, "resume").await
    }

    /// `POST /v1/cronjobs/{ns}/{name}/run`: a manual run now.
    pub async fn run_cron_job(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.cron_job_action(key, "run").await
    }

    async fn cron_job_action(&self, key: &ResourceKey, action: &str) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(
            Method::POST,
            &paths::cron_job_action(key, action),
            &Empty {},
        )
        .await
        .map(drop)
    }

    /// `POST /v1/runs/{ns}/{run}/report` (hosts).
    pub async fn report_run(&self, run: &ResourceKey, report: &RunReport) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::POST, &paths::run_report(run), report)
            .await
            .map(drop)
    }

    /// `POST /v1/apps/{ns}/{name}/checks` (hosts): how a rollout's `job` check ended.
    pub async fn report_check(
        &self,
        app: &ResourceKey,
        report: &CheckReport,
    ) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::POST, &paths::app_action(app, "checks"), report)
            .await
            .map(drop)
    }

    /// `GET /v1/pods`, narrowed to a namespace and an app.
    pub async fn pods(
        &self,
        namespace: Option<&str>,
        app: Option<&str>,
    ) -> Result<Vec<Pod>, ApiError> {
        self.get(&paths::listing("pods", namespace, app)).await
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<Vec<Host>, ApiError> {
        self.get(paths::HOSTS).await
    }

    /// `GET /v1/watch`: the state version once it passes `since`, or after `wait`.
    pub async fn watch(&self, since: u64, wait: Duration) -> Result<WatchResponse, ApiError> {
        self.get(&paths::watch(since, wait.as_millis() as u64))
            .await
    }

    /// `POST /v1/tokens`: a new token, shown once.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenResponse, ApiError> {
        self.send_json(Method::POST, paths::TOKENS, req).await
    }

    /// `GET /v1/tokens` (admins): every token, by id, without its secret.
    pub async fn tokens(&self) -> Result<Vec<dabba_spec::api::TokenView>, ApiError> {
        self.get(paths::TOKENS).await
    }

    /// `DELETE /v1/tokens/{id}` (admins).
    pub async fn revoke_token(&self, id: &str) -> Result<(), ApiError> {
        self.request(Method::DELETE, &paths::token(id), Bytes::new(), JSON)
            .await
            .map(drop)
    }

    /// `PUT /v1/secrets/{ns}/{name}`: sets (or removes) keys; answers the secret
    /// without its values.
    pub async fn put_secret(
        &self,
        key: &ResourceKey,
        put: &dabba_spec::secret::SecretPut,
    ) -> Result<dabba_spec::secret::SecretView, ApiError> {
        self.send_json(Method::PUT, &paths::secret(key), put).await
    }

    /// `GET /v1/secrets[?namespace=NS]`: keys, versions and users, never a value.
    pub async fn secrets(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<dabba_spec::secret::SecretView>, ApiError> {
        self.get(&paths::listing("secrets", namespace, None)).await
    }

    /// `GET /v1/secrets/{ns}/{name}`.
    pub async fn secret(
        &self,
        key: &ResourceKey,
    ) -> Result<dabba_spec::secret::SecretView, ApiError> {
        self.get(&paths::secret(key)).await
    }

    /// `DELETE /v1/secrets/{ns}/{name}` (refused while an app or cron job lists it).
    pub async fn delete_secret(&self, key: &ResourceKey) -> Result<(), ApiError> {
        self.request(Method::DELETE, &paths::secret(key), Bytes::new(), JSON)
            .await
            .map(drop)
    }

    /// `POST /v1/secrets/rotate-key` (admins): a new data key; every secret re-sealed.
    pub async fn rotate_secret_key(&self) -> Result<dabba_spec::secret::KeyRotated, ApiError> {
        self.send_json(Method::POST, paths::ROTATE_SECRET_KEY, &Empty {})
            .await
    }

    /// `PUT /v1/namespaces/{ns}/policy` (admins): a namespace's quota and limit range.
    pub async fn set_namespace_policy(
        &self,
        ns: &str,
        policy: &dabba_spec::quota::NamespacePolicy,
    ) -> Result<dabba_spec::quota::NamespaceView, ApiError> {
        self.send_json(Method::PUT, &paths::namespace_policy(ns), policy)
            .await
    }

    /// `GET /v1/namespaces/{ns}/policy`: the policy and what the namespace uses.
    pub async fn namespace(&self, ns: &str) -> Result<dabba_spec::quota::NamespaceView, ApiError> {
        self.get(&paths::namespace_policy(ns)).await
    }

    /// `PUT /v1/roles` (admins).
    pub async fn put_role(&self, role: &dabba_spec::rbac::RoleSpec) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::PUT, paths::ROLES, role)
            .await
            .map(drop)
    }

    /// `GET /v1/roles` (admins): the cluster's own roles.
    pub async fn roles(&self) -> Result<Vec<dabba_spec::rbac::RoleSpec>, ApiError> {
        self.get(paths::ROLES).await
    }

    /// `PUT /v1/rolebindings` (admins).
    pub async fn put_role_binding(
        &self,
        binding: &dabba_spec::rbac::RoleBinding,
    ) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::PUT, paths::ROLE_BINDINGS, binding)
            .await
            .map(drop)
    }

    /// `GET /v1/rolebindings` (admins).
    pub async fn role_bindings(&self) -> Result<Vec<dabba_spec::rbac::RoleBinding>, ApiError> {
        self.get(paths::ROLE_BINDINGS).await
    }

    /// `DELETE /v1/roles/{name}` or `/v1/rolebindings/{name}` (`binding`), in
    /// `namespace` or cluster-wide.
    pub async fn delete_rbac(
        &self,
        binding: bool,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        let collection = if binding {
            paths::ROLE_BINDINGS
        } else {
            paths::ROLES
        };
        self.request(
            Method::DELETE,
            &paths::rbac_object(collection, name, namespace),
            Bytes::new(),
            JSON,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/auth/can-i`: whether this client's token may `verb` `resource`.
    pub async fn can_i(
        &self,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<dabba_spec::rbac::CanI, ApiError> {
        self.get(&paths::can_i(verb, resource, namespace)).await
    }

    /// `GET /v1/cluster`.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        self.get(paths::CLUSTER).await
    }

    /// `GET /v1/cluster/peer-token`.
    pub async fn peer_token(&self) -> Result<PeerToken, ApiError> {
        self.get(paths::PEER_TOKEN).await
    }

    /// `GET /v1/regions`.
    pub async fn regions(&self) -> Result<Vec<RegionView>, ApiError> {
        self.get(paths::REGIONS).await
    }

    /// `POST /v1/regions/{region}/{action}`: `failover` or `drain` (to `to`, default
    /// each app's next region), or `restore`.
    pub async fn region_action(
        &self,
        region: &str,
        action: &str,
        to: Option<&str>,
    ) -> Result<Vec<RegionView>, ApiError> {
        self.send_json(
            Method::POST,
            &paths::region_action(region, action),
            &RegionMove {
                to: to.map(str::to_string),
            },
        )
        .await
    }

    /// `PUT /v1/cluster/preferred-leader-region`.
    pub async fn prefer_leader_region(
        &self,
        req: &PreferredLeaderRegion,
    ) -> Result<ClusterStatus, ApiError> {
        self.send_json(Method::PUT, paths::PREFERRED_LEADER_REGION, req)
            .await
    }

    /// `POST /v1/cluster/members`: adds a controller (learner, then voter). The leader
    /// answers once the new controller has caught up (a snapshot of the whole state may
    /// be on its way to it), so this waits up to [`MEMBER_CATCH_UP`].
    pub async fn add_member(&self, req: &AddMember) -> Result<ClusterStatus, ApiError> {
        self.with_bounds(self.retry_for, MEMBER_CATCH_UP)
            .send_json(Method::POST, paths::MEMBERS, req)
            .await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ApiError> {
        let answer = self
            .request(Method::DELETE, &paths::member(id), Bytes::new(), JSON)
            .await?;
        decode(&answer)
    }

    /// `POST /v1/hosts/register` (hosts).
    pub async fn register_host(&self, info: &HostInfo) -> Result<Registered, ApiError> {
        self.send_json(Method::POST, paths::REGISTER_HOST, info)
            .await
    }

    /// `POST /v1/hosts/{name}/heartbeat` (hosts).
    pub async fn heartbeat(&self, host: &str, beat: &Heartbeat) -> Result<(), ApiError> {
        self.send_json::<_, Empty>(Method::POST, &paths::heartbeat(host), beat)
            .await
            .map(drop)
    }

    /// `GET /v1/hosts/{name}/assignments` (hosts): long-polls past `since`.
    pub async fn assignments(
        &self,
        host: &str,
        since: u64,
        wait: Duration,
    ) -> Result<HostView, ApiError> {
        self.get(&paths::assignments(host, since, wait.as_millis() as u64))
            .await
    }

    /// `POST /v1/kv/write` (hosts).
    pub async fn kv_write(&self, write: &KvWrite) -> Result<KvWriteResult, ApiError> {
        self.send_json(Method::POST, paths::KV_WRITE, write).await
    }

    /// `POST /v1/kv/read` (hosts): linearizable reads of several keys.
    pub async fn kv_read(&self, read: &KvRead) -> Result<KvValues, ApiError> {
        let body = serde_json::to_vec(read).map_err(|e| ApiError::Decode(e.to_string()))?;
        let resp = self
            .exchange(
                Method::POST,
                paths::KV_READ,
                Bytes::from(body),
                JSON,
                Some(KV_VALUES_BINARY),
            )
            .await?;
        // A controller of an earlier version answers JSON whatever was asked.
        let binary = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t == KV_VALUES_BINARY);
        if binary {
            KvValues::from_binary(resp.body()).map_err(ApiError::Decode)
        } else {
            decode(resp.body())
        }
    }

    /// `POST /v1/kv/list` (hosts).
    pub async fn kv_list(&self, list: &KvList) -> Result<KvKeys, ApiError> {
        self.send_json(Method::POST, paths::KV_LIST, list).await
    }

    // --- the transport ------------------------------------------------------------

    /// Sends one request, trying each controller in turn while none can serve it; the
    /// body of a successful answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> Result<Bytes, ApiError> {
        self.exchange(method, path, body, content_type, None)
            .await
            .map(http::Response::into_body)
    }

    /// [`ApiClient::request`] asking for an answer of the type `accept`, and giving the
    /// whole answer.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
        accept: Option<&str>,
    ) -> Result<http::Response<Bytes>, ApiError> {
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(10);
        let mut last = String::from("no controller URL configured");
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            for i in 0..self.servers.len() {
                let idx = (first + i) % self.servers.len();
                let url = format!("{}{path}", self.servers[idx]);
                let mut req = http::Request::builder()
                    .method(method.clone())
                    .uri(&url)
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", self.token()),
                    )
                    .header(http::header::CONTENT_TYPE, content_type);
                if let Some(accept) = accept {
                    req = req.header(http::header::ACCEPT, accept);
                }
                let req = req
                    .body(Full::new(body.clone()))
                    .map_err(|e| ApiError::Decode(e.to_string()))?;
                match send(&self.http, req, self.timeout).await {
                    Ok(resp) if resp.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
                        last = status_error(resp.status().as_u16(), resp.body()).to_string();
                    }
                    Ok(resp) => {
                        let leader = resp
                            .headers()
                            .get(LEADER_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|l| {
                                let l = l.trim_end_matches('/');
                                self.servers.iter().position(|s| s == l)
                            });
                        self.preferred
                            .store(leader.unwrap_or(idx), Ordering::Relaxed);
                        let status = resp.status().as_u16();
                        if resp.status().is_success() {
                            return Ok(resp);
                        }
                        return Err(status_error(status, resp.body()));
                    }
                    Err(e) if e.never_sent() => last = e.to_string(),
                    Err(e) => {
                        // Its answer was lost or late: the next request starts at the
                        // next controller (one cut off by a partition never answers).
                        self.preferred
                            .store((idx + 1) % self.servers.len(), Ordering::Relaxed);
                        return Err(ApiError::Unknown(e.to_string()));
                    }
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ApiError::Unavailable(last));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let bytes = self.request(Method::GET, path, Bytes::new(), JSON).await?;
        decode(&bytes)
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let bytes = self.request(method, path, Bytes::from(body), JSON).await?;
        decode(&bytes)
    }
}

const JSON: &str = "application/json";
const WASM: &str = "application/wasm";

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))
}

pub(crate) fn status_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError::Status {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ApiError::Status {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn after_a_controller_never_answers_the_next_request_starts_at_the_next() {
        // One controller accepts and never answers (cut off); the other answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = live.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if conn.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let api = ApiClient::new(
            vec![
                format!("http://{silent_addr}"),
                format!("http://{live_addr}"),
            ],
            "t".into(),
        )
        .with_bounds(Duration::ZERO, Duration::from_millis(300));
        let key = ResourceKey::new("default", "a");
        let first = api.delete_app(&key).await.unwrap_err();
        assert!(matches!(first, ApiError::Unknown(_)), "{first}");
        api.delete_app(&key).await.unwrap();
        api.delete_app(&key).await.unwrap();
    }

    /// A stand-in controller that answers `/v1/kv/read` with `values`: in binary when
    /// the request accepts it and `binary` is set (a current controller), in JSON when
    /// not (an earlier one). Refuses a request without the accept header when `binary`.
    async fn kv_controller(values: KvValues, binary: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let head = crate::transfer::tests::read_head(&mut conn).await;
                let asked = head.contains(&format!("accept: {KV_VALUES_BINARY}"));
                let (status, kind, body) = match (binary, asked) {
                    (true, true) => ("200 OK", KV_VALUES_BINARY, values.to_binary()),
                    (true, false) => ("400 Bad Request", JSON, b"{}".to_vec()),
                    (false, _) => ("200 OK", JSON, serde_json::to_vec(&values).unwrap()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            }
        });
        format!("http://{addr}")
    }

    /// Hosts read values in binary from a current controller and in JSON from an
    /// earlier one, to the same values.
    #[tokio::test]
    async fn key_values_are_read_in_binary_or_in_json_from_an_earlier_controller() {
        let values = KvValues {
            values: vec![
                Some(b"{\"amount\":5}".to_vec()),
                None,
                Some(vec![0, 255, 10]),
            ],
        };
        let read = KvRead {
            bucket: "default/ledger".into(),
            keys: vec!["a".into(), "b".into(), "c".into()],
        };
        for binary in [true, false] {
            let url = kv_controller(values.clone(), binary).await;
            let api = ApiClient::new(vec![url], "t".into())
                .with_bounds(Duration::ZERO, Duration::from_secs(5));
            assert_eq!(
                api.kv_read(&read).await.unwrap(),
                values,
                "binary: {binary}"
            );
        }
    }
}
