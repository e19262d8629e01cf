//! A test double for the gateway and a harness that serves the admin API on
//! `127.0.0.1:0`, shared by the admin and CLI tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{serve, AdminClient};
use crate::secret::Secret;
use crate::task::{EndReason, StartedTask, Task, TaskError, TaskService, TaskSpec, TaskStore};

pub(crate) const ADMIN_TOKEN: &str = "test-secret-admin-token";

/// A service backed by a bare store, knowing the scopes `github-read` and `ci`.
pub(crate) struct StoreService {
    pub(crate) store: TaskStore,
    pub(crate) not_ready: Mutex<Option<String>>,
    pub(crate) ports: Mutex<Vec<tokio::net::TcpListener>>,
    pub(crate) approvals: crate::approval::Approvals,
    /// The approval changes the service was asked to record.
    pub(crate) recorded: Mutex<Vec<crate::approval::Change>>,
}

impl StoreService {
    pub(crate) fn new() -> StoreService {
        StoreService {
            store: TaskStore::new(),
            not_ready: Mutex::new(None),
            ports: Mutex::new(Vec::new()),
            approvals: crate::approval::Approvals::new(Duration::from_secs(15 * 60)),
            recorded: Mutex::new(Vec::new()),
        }
    }
}

impl TaskService for StoreService {
    fn start_task(&self, spec: TaskSpec) -> Result<StartedTask, TaskError> {
        if let Some(unknown) = spec
            .scopes
            .iter()
            .find(|s| !["github-read", "ci"].contains(&s.as_str()))
        {
            return Err(TaskError::Invalid(format!("unknown scope {unknown:?}")));
        }
        let (task, token) = self.store.create(spec, SystemTime::now());
        Ok(StartedTask { task, token })
    }

    fn end_task(&self, id: &str) -> crate::BoxFuture<'_, Result<Arc<Task>, TaskError>> {
        let found = self
            .store
            .get(id)
            .ok_or_else(|| TaskError::NotFound(id.to_owned()));
        Box::pin(async move {
            let task = found?;
            task.end(EndReason::Requested);
            Ok(task)
        })
    }

    fn get_task(&self, id: &str) -> Option<Arc<Task>> {
        self.store.get(id)
    }

    fn list_tasks(&self) -> Vec<Arc<Task>> {
        self.store.list()
    }

    /// A real port, bound and never served: the admin API's answer, not
    /// the proxy behind it, is what these tests check.
    fn open_task_port(
        &self,
        _task: &Arc<Task>,
        _uid: Option<u32>,
    ) -> crate::BoxFuture<'_, Result<SocketAddr, TaskError>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| TaskError::Unavailable(e.to_string()))?;
            let addr = listener
                .local_addr()
                .map_err(|e| TaskError::Unavailable(e.to_string()))?;
            self.ports
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(listener);
            Ok(addr)
        })
    }

    fn proxy_url(&self) -> String {
        "http://127.0.0.1:8080".into()
    }

    fn ready(&self) -> Result<(), String> {
        match &*self.not_ready.lock().unwrap() {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn approvals(&self) -> &crate::approval::Approvals {
        &self.approvals
    }

    fn record_approvals(&self, changes: Vec<crate::approval::Change>) {
        self.recorded.lock().unwrap().extend(changes);
    }
}

pub(crate) struct Harness {
    pub(crate) addr: SocketAddr,
    pub(crate) service: Arc<StoreService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(StoreService::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            service.clone(),
            Secret::new(ADMIN_TOKEN),
            async {
                let _ = stopped.await;
            },
        ));
        Harness {
            addr,
            service,
            stop: Some(stop),
            server,
        }
    }

    pub(crate) fn client(&self, token: &str) -> AdminClient {
        AdminClient::new(&format!("http://{}", self.addr), Secret::new(token)).unwrap()
    }

    /// One raw request; `auth` is the whole `Authorization` value.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, http::HeaderMap, String) {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    pub(crate) async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, _, body) = self
            .send(method, path, Some(&auth), body.map(str::to_owned))
            .await;
        (status, body)
    }

    pub(crate) async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stopped")
            .unwrap()
            .unwrap();
    }
}
