//! Shared code of `dm_rest.rs`: a master on either store backend (with its
//! nx-27017 server for MongoDB), room API calls with the key, and a webhook
//! receiver that records the POSTs it gets.

#![allow(dead_code)]

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chat_tests::client::enc;
use chat_tests::{Client, Resp, Server, ServerOpts, token, within};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::data_common::Nx;

/// Bound of every wait for a webhook POST.
const EVENT_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Redb,
    Mongo,
}

/// A master with a JWT secret on the backend; the nx-27017 server with it.
pub struct Host {
    pub s: Server,
    pub secret: String,
    pub nx: Option<Nx>,
}

impl Host {
    pub async fn start(backend: Backend) -> Host {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, args: &[String]) -> Host {
        let secret = chat_tests::random_string(32);
        let mut opts = ServerOpts::new()
            .jwt_secret(secret.clone())
            .args(args.iter().cloned());
        opts.room_ports = 10;
        let nx = match backend {
            Backend::Redb => None,
            Backend::Mongo => {
                let nx = Nx::start_memory().await;
                opts = opts.args(["--store", &nx.uri("dm_rest_db")]);
                Some(nx)
            }
        };
        Host {
            s: Server::start(opts).await,
            secret,
            nx,
        }
    }

    pub async fn room(&self, name: &str) -> u16 {
        self.s.create_room(name).await
    }

    pub async fn join(&self, port: u16, room: &str, user: &str) -> Client {
        Client::with_token(port, &token::member(&self.secret, user, room)).await
    }

    /// `GET` on the room API with the key.
    pub async fn get(&self, path: &str) -> Resp {
        self.s.api(Method::GET, path).await
    }

    /// `POST /api/v1/users/{from}/dm/{to}` with a raw body.
    pub async fn post_dm_raw(&self, from: &str, to: &str, body: &str) -> Resp {
        let url = self
            .s
            .api_url(&format!("/api/v1/users/{}/dm/{}", enc(from), enc(to)));
        self.s
            .request(Method::POST, &url, Some(&self.s.key), Some(body))
            .await
    }

    /// A DM from the platform that must be stored; its `data`.
    pub async fn post_dm(&self, from: &str, to: &str, text: &str) -> Value {
        let body = serde_json::json!({ "text": text }).to_string();
        let r = self.post_dm_raw(from, to, &body).await;
        r.expect(200);
        r.data().clone()
    }

    /// A conversation page: (seqs, texts, next).
    pub async fn dm_page(&self, a: &str, b: &str, query: &str) -> (Vec<u64>, Vec<String>, Value) {
        let r = self
            .get(&format!(
                "/api/v1/conversations/{}/{}/messages{query}",
                enc(a),
                enc(b)
            ))
            .await;
        r.expect(200);
        page_of(&r)
    }

    /// A room page: (seqs, texts, next).
    pub async fn room_page(&self, room: &str, query: &str) -> (Vec<u64>, Vec<String>, Value) {
        let r = self
            .get(&format!("/api/v1/room/{room}/messages{query}"))
            .await;
        r.expect(200);
        page_of(&r)
    }

    /// Every conversation of `user`, following `next` with pages of `limit`.
    pub async fn all_conversations(&self, user: &str, limit: u32) -> Vec<Value> {
        let mut all = Vec::new();
        let mut query = format!("?limit={limit}");
        for _ in 0..50 {
            let r = self
                .get(&format!("/api/v1/users/{}/conversations{query}", enc(user)))
                .await;
            r.expect(200);
            let page = r.data()["conversations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(page.len() <= limit as usize, "{}", r.text);
            all.extend(page);
            match r.data()["next"].as_str() {
                Some(next) => query = format!("?limit={limit}&before={}", enc(next)),
                None => return all,
            }
        }
        panic!("more than 50 pages of conversations");
    }
}

fn page_of(r: &Resp) -> (Vec<u64>, Vec<String>, Value) {
    let messages = r.data()["messages"].as_array().cloned().unwrap_or_default();
    let seqs = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    let texts = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect();
    (seqs, texts, r.data()["next"].clone())
}

/// One POST the receiver got.
#[derive(Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Whether `X-Chat-Signature` is the HMAC of timestamp + "." + body.
    pub fn signed_with(&self, secret: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(self.header("x-chat-timestamp").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.header("x-chat-signature") == expected
    }
}

/// A webhook receiver answering 200 to every POST.
pub struct Receiver {
    pub url: String,
    got: mpsc::UnboundedReceiver<Received>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (tx, got) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send(Received {
                        headers,
                        body,
                        json,
                    });
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            _task: task,
        }
    }

    /// The next POST of event type `kind` (others are skipped).
    pub async fn next_of(&mut self, kind: &str) -> Received {
        loop {
            let r = within(EVENT_WAIT, "a webhook POST", self.got.recv())
                .await
                .expect("the receiver stopped");
            if r.json["type"] == kind {
                return r;
            }
        }
    }
}
