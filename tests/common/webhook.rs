//! A webhook receiver for the events tests: real HTTP (or HTTPS) on 127.0.0.1, answering
//! as a script says, recording every request, checking every delivery's signature.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pushwire::auth::Secret;
use pushwire::events::signature;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};

/// The secret the receivers check deliveries with.
pub const SECRET: &str = "webhook-s3cret";

/// How the receiver answers its `n`th request (from 0).
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// 429 with `Retry-After: SECS`.
    SlowDown(u64),
    /// Never answers.
    Hang,
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub timestamp: String,
    pub signature: String,
    pub delivery: String,
    pub content_type: String,
    /// Pusher's headers (the Pusher apps' webhooks).
    pub pusher_key: String,
    pub pusher_signature: String,
    pub body: Bytes,
    pub answered: u16,
}

/// A webhook receiver on 127.0.0.1 (HTTP, or HTTPS with `tls`), answering as `script`
/// says and recording every request.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Got>>>,
    pub conns: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        Receiver::start_tls(None, script).await
    }

    pub async fn start_tls(
        tls: Option<Arc<rustls::ServerConfig>>,
        script: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let task = tokio::spawn({
            let (got, conns) = (got.clone(), conns.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    conns.fetch_add(1, Ordering::SeqCst);
                    let (got, requests, script, tls) =
                        (got.clone(), requests.clone(), script.clone(), tls.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (got, requests, script) =
                                (got.clone(), requests.clone(), script.clone());
                            async move {
                                let n = requests.fetch_add(1, Ordering::SeqCst);
                                let answer = script(n);
                                let header = |name: &str| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_owned()
                                };
                                let mut g = Got {
                                    at: Instant::now(),
                                    timestamp: header(signature::TIMESTAMP),
                                    signature: header(signature::SIGNATURE),
                                    delivery: header(signature::DELIVERY),
                                    content_type: header("content-type"),
                                    pusher_key: header("x-pusher-key"),
                                    pusher_signature: header("x-pusher-signature"),
                                    body: Bytes::new(),
                                    answered: 0,
                                };
                                g.body = req.into_body().collect().await.unwrap().to_bytes();
                                let (status, retry) = match answer {
                                    Answer::Status(s) => (s, None),
                                    Answer::SlowDown(secs) => (429, Some(secs)),
                                    Answer::Hang => {
                                        g.answered = 0;
                                        got.lock().unwrap().push(g);
                                        std::future::pending::<()>().await;
                                        unreachable!()
                                    }
                                };
                                g.answered = status;
                                got.lock().unwrap().push(g);
                                let mut resp = Response::new(Full::new(Bytes::from_static(b"")));
                                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                                if let Some(secs) = retry {
                                    resp.headers_mut()
                                        .insert("retry-after", secs.to_string().parse().unwrap());
                                }
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                            }
                            Some(config) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let _ = http.serve_connection(TokioIo::new(tls), service).await;
                                }
                            }
                        }
                    });
                }
            }
        });
        Receiver {
            addr,
            got,
            conns,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The events of every delivery answered 2xx, in order, each delivery's signature
    /// checked.
    pub fn taken(&self) -> Vec<Value> {
        let secret = Secret::new(SECRET);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut out = Vec::new();
        for g in self.got() {
            assert_eq!(
                signature::verify(&secret, &g.timestamp, &g.signature, &g.body, now, 300),
                Ok(()),
                "delivery {} signed",
                g.delivery
            );
            assert_eq!(g.content_type, "application/json");
            if (200..300).contains(&g.answered) {
                let body: Value = serde_json::from_slice(&g.body).unwrap();
                out.extend(body["events"].as_array().unwrap().iter().cloned());
            }
        }
        out
    }

    /// Waits until the receiver has taken `n` events.
    pub async fn wait_taken(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let taken = self.taken();
            if taken.len() >= n {
                return taken;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events taken within {within:?}: {:?}",
                taken.len(),
                self.got().iter().map(|g| g.answered).collect::<Vec<_>>()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
