//! The running gateway: the current configuration, the tasks, the credential
//! cache, the decision log and the TLS state, shared by every connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::admission::AdmissionPhase;
use super::upstream::{CachingResolver, Resolve, Upstreams};
use crate::approval::{Approval, Approvals, Change};
use crate::audit::{AuditSink, DecisionRecord, Event};
use crate::config::{Config, ConfigErrors};
use crate::credential::cache::CredentialCache;
use crate::credential::{CredentialDef, Revocation};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::scrub::Scrubber;
use crate::task::{EndReason, StartedTask, Task, TaskError, TaskService, TaskSpec, TaskStore};
use crate::tls::{upstream_client_config, CertificateAuthority, LeafCache};

/// How long a revocation at a credential source may take before it is
/// recorded as failed.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an ended task is remembered, so its token gets "task ended"
/// rather than "invalid".
const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// One validated configuration together with what is built from it: the
/// one place where the model becomes live sources and clients. Swapped
/// whole on reload, so a request sees one consistent configuration.
pub struct Snapshot {
    /// The configuration.
    pub config: Config,
    /// The live source of every credential, by name.
    pub(crate) sources: std::collections::BTreeMap<String, Arc<CredentialDef>>,
    /// Increases with every reload; part of credential cache keys so a changed
    /// credential definition is fetched anew.
    pub generation: u64,
    pub(crate) upstreams: Upstreams,
}

/// Everything the proxy shares across connections.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    pub(crate) tasks: TaskStore,
    pub(crate) credentials: CredentialCache,
    pub(crate) audit: Arc<AuditSink>,
    pub(crate) leaves: LeafCache,
    /// `http://` + the proxy's bound address, used when the config sets no proxy_url.
    bound_proxy_url: String,
    pub(crate) resolver: Arc<dyn Resolve>,
    /// Masks every credential held for any task; rebuilt when the set changes.
    credential_scrubber: ArcSwap<(u64, Arc<Scrubber>)>,
    rebuild: std::sync::Mutex<()>,
    /// The phases every request and tunnel passes after authorize.
    admission: ArcSwap<Vec<Arc<dyn AdmissionPhase>>>,
    /// The gateway itself, for the accept loops of task ports.
    me: std::sync::Weak<Gateway>,
    /// The accept loops of task ports still open or draining.
    task_ports: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Every task's approvals.
    pub(crate) approvals: Approvals,
}

/// What a record says of `approval`.
pub(crate) fn approval_info(approval: &Approval) -> crate::audit::ApprovalInfo {
    let mut approvers = approval.approvers();
    if let Some(denial) = &approval.denial {
        approvers.push(denial.approver.clone());
    }
    crate::audit::ApprovalInfo {
        id: approval.id.clone(),
        state: approval.state.as_str().to_owned(),
        approvers,
        grant: approval.grant.map(|g| g.to_string()),
    }
}

/// Why the gateway could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The upstream TLS configuration could not be built.
    #[error("upstream TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A credential source could not be built (a secret or file changed
    /// since the configuration was validated).
    #[error("{0}")]
    Sources(ConfigErrors),
}

impl Gateway {
    /// Builds the gateway around a validated configuration, its sources
    /// reading secrets and files through `provider`. `bound` is the address
    /// the proxy listener actually bound; `resolver` answers every DNS
    /// lookup the proxy makes.
    pub fn new(
        config: Config,
        provider: &dyn Provider,
        audit: Arc<AuditSink>,
        ca: Arc<CertificateAuthority>,
        bound: std::net::SocketAddr,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let resolver: Arc<dyn Resolve> =
            Arc::new(CachingResolver::new(resolver, Duration::from_secs(30)));
        let approvals = Approvals::new(config.approval_pending_ttl);
        let snapshot = build_snapshot(config, provider, 0, &resolver)?;
        let gateway = Arc::new_cyclic(|me| Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(0),
            tasks: TaskStore::new(),
            credentials: CredentialCache::new(Duration::from_secs(60)),
            audit,
            leaves: LeafCache::new(ca),
            bound_proxy_url: format!("http://{bound}"),
            resolver,
            credential_scrubber: ArcSwap::from_pointee((0, Arc::new(Scrubber::new([])))),
            rebuild: std::sync::Mutex::new(()),
            admission: ArcSwap::from_pointee(Vec::new()),
            me: me.clone(),
            task_ports: std::sync::Mutex::new(Vec::new()),
            approvals,
        });
        gateway.start_ambient();
        Ok(gateway)
    }

    /// The decision log.
    pub fn audit_sink(&self) -> &Arc<AuditSink> {
        &self.audit
    }

    /// Adds `phase` after the admission phases already held: from now on
    /// every request and every tunnel, whichever way it came in, passes it
    /// after authorize (see [`super::admission`]).
    pub fn add_admission_phase(&self, phase: Arc<dyn AdmissionPhase>) {
        self.admission.rcu(|phases| {
            let mut phases = Vec::clone(phases);
            phases.push(phase.clone());
            phases
        });
    }

    /// The admission phases, in order.
    pub(crate) fn admission_phases(&self) -> arc_swap::Guard<Arc<Vec<Arc<dyn AdmissionPhase>>>> {
        self.admission.load()
    }

    /// A scrubber for every credential currently held for any task: a shared
    /// upstream may echo one task's credential to another. Rebuilt (once,
    /// however many requests ask) whenever a credential is issued or dropped.
    pub(crate) fn credential_scrubber(&self) -> Arc<Scrubber> {
        let wanted = self.credentials.global_generation();
        let current = self.credential_scrubber.load();
        if current.0 == wanted {
            return current.1.clone();
        }
        let _rebuilding = self
            .rebuild
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted = self.credentials.global_generation();
        let current = self.credential_scrubber.load();
        if current.0 == wanted {
            return current.1.clone();
        }
        let held = self.credentials.all_issued();
        let scrubber = Arc::new(Scrubber::new(held.iter().flat_map(|c| c.secret_values())));
        self.credential_scrubber
            .store(Arc::new((wanted, scrubber.clone())));
        scrubber
    }

    /// The configuration in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new validated configuration. Listen addresses, the CA and
    /// the audit path are read at start only; a change to them is reported
    /// and takes effect on restart.
    ///
    /// A changed `ambient_task` takes effect at once: the old ambient task
    /// ends (its credentials are revoked) and the new one starts; a removed
    /// one stops tokenless access.
    pub async fn reload(
        &self,
        config: Config,
        provider: &dyn Provider,
    ) -> Result<Vec<String>, GatewayError> {
        let current = self.snapshot();
        let mut restart_needed = Vec::new();
        if config.listen != current.config.listen {
            restart_needed.push("listen".to_string());
        }
        if config.transparent_listen != current.config.transparent_listen {
            restart_needed.push("transparent_listen".to_string());
        }
        if config.admin.listen != current.config.admin.listen {
            restart_needed.push("admin.listen".to_string());
        }
        if config.ca.cert != current.config.ca.cert || config.ca.key != current.config.ca.key {
            restart_needed.push("ca".to_string());
        }
        if config.audit_path != current.config.audit_path {
            restart_needed.push("audit.path".to_string());
        }
        let ambient_changed = config.ambient_task != current.config.ambient_task;
        self.approvals.set_pending_ttl(config.approval_pending_ttl);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let snapshot = build_snapshot(config, provider, generation, &self.resolver)?;
        self.snapshot.store(Arc::new(snapshot));
        if ambient_changed {
            if let Some(old) = self.tasks.ambient() {
                if old.end(EndReason::Requested) {
                    self.finish_task(&old, EndReason::Requested).await;
                }
            }
            self.start_ambient();
        }
        Ok(restart_needed)
    }

    fn start_ambient(&self) {
        let snapshot = self.snapshot();
        let Some(ambient) = &snapshot.config.ambient_task else {
            return;
        };
        let task = self.tasks.create_ambient(
            TaskSpec {
                agent: ambient.agent.clone(),
                scopes: ambient.scopes.clone(),
                ttl: Some(ambient.ttl),
                labels: ambient.labels.clone(),
            },
            SystemTime::now(),
        );
        self.record_task(&task, Event::TaskStart, "ambient task started");
    }

    fn record_task(&self, task: &Task, event: Event, message: &str) {
        let mut rec = DecisionRecord::event(event, SystemTime::now());
        rec.task = Some(task.id.clone());
        rec.agent = Some(task.agent.clone());
        rec.labels = task.labels.clone();
        rec.message = Some(message.to_string());
        self.audit.emit(rec);
    }

    /// Revokes what the task held and records the end. Runs once per task,
    /// after [`Task::end`] returned true.
    async fn finish_task(&self, task: &Arc<Task>, why: EndReason) {
        let ended = self
            .approvals
            .end_task(&task.id, tokio::time::Instant::now());
        self.record_approvals(ended);
        let outcomes = self.credentials.end_task(&task.id, REVOKE_TIMEOUT).await;
        for (credential, outcome) in outcomes {
            let mut rec = DecisionRecord::event(Event::CredentialRevoke, SystemTime::now());
            rec.task = Some(task.id.clone());
            rec.agent = Some(task.agent.clone());
            rec.labels = task.labels.clone();
            rec.credential = Some(Arc::new(credential.record_info(None)));
            rec.message = Some(match outcome {
                Ok(Revocation::Revoked) => "revoked at the source".to_string(),
                Ok(Revocation::NotSupported) => {
                    "the source has no revocation; the credential expires on its own".to_string()
                }
                Err(e) => format!("revocation failed: {e}"),
            });
            self.audit.emit(rec);
        }
        let why_text = match why {
            EndReason::Requested => "task ended on request",
            EndReason::Expired => "task expired",
            EndReason::Shutdown => "task ended at shutdown",
        };
        self.record_task(task, Event::TaskEnd, why_text);
    }

    /// Ends every expired task (revoking its credentials) and forgets long-ended ones.
    pub async fn reap(&self) {
        let now = SystemTime::now();
        for task in self.tasks.expired(now) {
            if task.end(EndReason::Expired) {
                self.finish_task(&task, EndReason::Expired).await;
            }
        }
        self.tasks.purge_ended(now, KEEP_ENDED);
        self.snapshot().upstreams.sweep();
    }

    /// Ends every task at shutdown, revoking their credentials.
    pub async fn end_all_tasks(&self) {
        for task in self.tasks.list() {
            if task.end(EndReason::Shutdown) {
                self.finish_task(&task, EndReason::Shutdown).await;
            }
        }
        // Their ports close with them; their connections' records are
        // emitted before this returns.
        let ports = std::mem::take(
            &mut *self
                .task_ports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for port in ports {
            let _ = port.await;
        }
    }
}

/// Builds everything live from the validated model: the upstream TLS
/// configuration and pools, and every credential source.
fn build_snapshot(
    config: Config,
    provider: &dyn Provider,
    generation: u64,
    resolver: &Arc<dyn Resolve>,
) -> Result<Snapshot, GatewayError> {
    let tls = upstream_client_config(config.upstream.extra_ca.as_deref(), provider)?;
    let upstreams = Upstreams::new(tls, resolver.clone(), config.upstream.connect_timeout);
    let mut sources = std::collections::BTreeMap::new();
    let mut errors: Vec<FieldError> = Vec::new();
    for (name, spec) in &config.credentials {
        let key = spec.source.kind();
        match spec.source.build(provider) {
            Ok(source) => {
                let def = CredentialDef {
                    name: name.clone(),
                    source,
                };
                sources.insert(name.clone(), Arc::new(def));
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|e| e.under(key).under(&format!("credentials.{name}"))),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(GatewayError::Sources(ConfigErrors { file: None, errors }));
    }
    Ok(Snapshot {
        config,
        sources,
        generation,
        upstreams,
    })
}

impl TaskService for Gateway {
    fn start_task(&self, spec: TaskSpec) -> Result<StartedTask, TaskError> {
        let snapshot = self.snapshot();
        let config = &snapshot.config;
        if spec.scopes.is_empty() {
            return Err(TaskError::Invalid("a task needs at least one scope".into()));
        }
        for scope in &spec.scopes {
            if !config.policy.has_scope(scope) {
                return Err(TaskError::Invalid(format!(
                    "no scope named {scope:?}; configured scopes: {}",
                    config.policy.scope_names().join(", ")
                )));
            }
        }
        let ttl = spec.ttl.unwrap_or(config.tasks.default_ttl);
        if ttl.is_zero() || ttl > config.tasks.max_ttl {
            return Err(TaskError::Invalid(format!(
                "ttl must be between 1s and tasks.max_ttl ({})",
                humantime::format_duration(config.tasks.max_ttl)
            )));
        }
        if !self.audit.healthy() {
            return Err(TaskError::Invalid(
                "the decision log cannot be written; no task can start".into(),
            ));
        }
        let (task, token) = self.tasks.create(
            TaskSpec {
                ttl: Some(ttl),
                ..spec
            },
            SystemTime::now(),
        );
        self.record_task(
            &task,
            Event::TaskStart,
            &format!(
                "scopes {}; ttl {}",
                task.scopes.join(", "),
                humantime::format_duration(ttl)
            ),
        );
        Ok(StartedTask { task, token })
    }

    fn end_task(&self, id: &str) -> crate::BoxFuture<'_, Result<Arc<Task>, TaskError>> {
        let id = id.to_string();
        Box::pin(async move {
            let task = self
                .tasks
                .get(&id)
                .ok_or_else(|| TaskError::NotFound(id.clone()))?;
            if task.end(EndReason::Requested) {
                self.finish_task(&task, EndReason::Requested).await;
            }
            Ok(task)
        })
    }

    fn get_task(&self, id: &str) -> Option<Arc<Task>> {
        self.tasks.get(id)
    }

    fn open_task_port(
        &self,
        task: &Arc<Task>,
        uid: Option<u32>,
    ) -> crate::BoxFuture<'_, Result<std::net::SocketAddr, TaskError>> {
        let task = task.clone();
        Box::pin(async move {
            let unavailable = |e: std::io::Error| {
                TaskError::Unavailable(format!("cannot open a port for the task: {e}"))
            };
            let gateway = self
                .me
                .upgrade()
                .ok_or_else(|| TaskError::Unavailable("the gateway is shutting down".into()))?;
            let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(unavailable)?;
            let addr = listener.local_addr().map_err(unavailable)?;
            let serving =
                tokio::spawn(super::server::serve_task_port(gateway, listener, task, uid));
            let mut ports = self
                .task_ports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ports.retain(|port| !port.is_finished());
            ports.push(serving);
            Ok(addr)
        })
    }

    fn list_tasks(&self) -> Vec<Arc<Task>> {
        self.tasks.list()
    }

    fn proxy_url(&self) -> String {
        self.snapshot()
            .config
            .proxy_url
            .clone()
            .unwrap_or_else(|| self.bound_proxy_url.clone())
    }

    fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    /// One record for each approval change.
    fn record_approvals(&self, changes: Vec<Change>) {
        for change in changes {
            let (event, approval) = match change {
                // One approver of two: the approval stays pending.
                Change::Approved(_) => continue,
                Change::Requested(a) => (Event::ApprovalRequest, a),
                Change::Granted(a) => (Event::ApprovalGrant, a),
                Change::Denied(a) => (Event::ApprovalDeny, a),
                Change::Expired(a) => (Event::ApprovalExpire, a),
            };
            let mut rec = DecisionRecord::event(event, SystemTime::now());
            rec.task = Some(approval.asked.task.to_string());
            rec.agent = Some(approval.context.agent.clone());
            rec.labels = Arc::new(approval.context.labels.iter().cloned().collect());
            rec.method = Some(crate::audit::method_name(&approval.asked.method));
            rec.host = Some(approval.context.host.clone());
            rec.port = Some(approval.context.port);
            rec.path = Some(approval.asked.path.clone());
            rec.rule = Some(approval.asked.rule.clone());
            rec.message = match &approval.denial {
                Some(denial) => denial.reason.clone(),
                None => approval.approvals.last().and_then(|a| a.reason.clone()),
            };
            rec.approval = Some(approval_info(&approval));
            self.audit.emit(rec);
        }
    }

    fn ready(&self) -> Result<(), String> {
        if self.audit.healthy() {
            Ok(())
        } else {
            Err("the decision log cannot be written".into())
        }
    }
}
