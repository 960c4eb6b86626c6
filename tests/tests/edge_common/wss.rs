//! A WebSocket client over TLS (through nginx), via an HTTP/1.1 upgrade
//! made with reqwest: no TLS feature of tokio-tungstenite is needed.

use chat_tests::TIMEOUT;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub struct Wss {
    ws: WebSocketStream<reqwest::Upgraded>,
    pub welcome: Value,
}

impl Wss {
    /// Opens `wss://...` (or `https://...`); on a refused handshake, the
    /// HTTP status and body.
    pub async fn connect(http: &reqwest::Client, url: &str) -> Result<Wss, (u16, String)> {
        let url = url
            .strip_prefix("wss://")
            .map(|rest| format!("https://{rest}"))
            .unwrap_or_else(|| url.to_owned());
        let key = generate_key();
        let res = tokio::time::timeout(
            TIMEOUT,
            http.get(&url)
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", &key)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {url} (upgrade): timeout"))
        .unwrap_or_else(|e| panic!("GET {url} (upgrade): {e}"));
        let status = res.status().as_u16();
        if status != 101 {
            let body = res.text().await.unwrap_or_default();
            return Err((status, body));
        }
        let accept = res
            .headers()
            .get("sec-websocket-accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            accept,
            derive_accept_key(key.as_bytes()),
            "wrong Sec-WebSocket-Accept from {url}"
        );
        let upgraded = res
            .upgrade()
            .await
            .unwrap_or_else(|e| panic!("upgrading {url}: {e}"));
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
        Ok(Wss {
            ws,
            welcome: Value::Null,
        })
    }

    /// Connects and reads `welcome`.
    pub async fn join(http: &reqwest::Client, url: &str) -> Wss {
        let mut c = match Self::connect(http, url).await {
            Ok(c) => c,
            Err((status, body)) => panic!("joining {url}: HTTP {status}: {body}"),
        };
        let w = c.recv_json().await;
        assert_eq!(w["type"], "welcome", "first frame from {url}: {w}");
        c.welcome = w;
        c
    }

    pub fn id(&self) -> String {
        self.welcome["you"]["id"].as_str().unwrap().to_owned()
    }

    /// The next text frame as JSON (pings skipped), at most 5 s.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Err(_) => panic!("no frame within {TIMEOUT:?}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"));
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of type `kind`, skipping others (at most 5 s each).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        for _ in 0..50 {
            let v = self.recv_json().await;
            if v["type"] == kind {
                return v;
            }
        }
        panic!("no {kind:?} frame among the next 50");
    }

    pub async fn send_json(&mut self, v: Value) {
        tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(v.to_string())))
            .await
            .expect("sending: timeout")
            .expect("sending a frame");
    }

    /// Waits for the server's close frame (at most 5 s): its code and reason;
    /// `None` if the stream ends without one.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Err(_) => panic!("the connection was not closed within {TIMEOUT:?}"),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Some(
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                }
                Ok(Some(Ok(Message::Text(t)))) => panic!("expected a close frame, got {t}"),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) => return None,
            }
        }
    }

    /// Sends a close frame and waits for the end (at most 5 s).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(TIMEOUT, self.ws.close(None)).await;
        let _ = tokio::time::timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
