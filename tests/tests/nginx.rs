//! The shipped nginx configuration (`nginx/`), with the real nginx binary:
//! TLS termination, the room API, rooms over wss, the room-port allow list,
//! body and rate limits, forwarded headers.
//!
//! nginx and the openssl CLI must be installed (tests/run installs them);
//! these tests fail, never skip, when they are missing.

mod edge_common;

use std::process::Command;
use std::time::Duration;

use chat_tests::{Server, ServerOpts, procs, within};
use edge_common::{Certs, EdgeOpts, HttpStub, Nginx, Wss};
use reqwest::Method;
use serde_json::{Value, json};

/// A master behind nginx; the master's `--public-url` is nginx's address.
struct Edge {
    // Field order = drop order: nginx first, then the master.
    nginx: Nginx,
    server: Server,
    _certs: Certs,
    https: reqwest::Client,
}

impl Edge {
    async fn start(extra: &[&str]) -> Edge {
        edge_common::nginx_bin();
        let certs = Certs::make();
        let nginx_port = procs::free_port();
        let server = Server::start(
            ServerOpts::new().args(["--public-url", &format!("https://127.0.0.1:{nginx_port}")]),
        )
        .await;
        let opts = EdgeOpts {
            api_upstream: format!("127.0.0.1:{}", server.port),
            room_ports: server.room_ports,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let nginx = Nginx::start(&certs, nginx_port, &opts).await;
        let https = certs.client();
        Edge {
            nginx,
            server,
            _certs: certs,
            https,
        }
    }

    /// A request through nginx, read completely: (status, body text, JSON).
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (u16, String, Value) {
        let url = self.nginx.url(path);
        let mut req = self.https.request(method.clone(), &url);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let res = within(
            Duration::from_secs(10),
            &format!("{method} {url}"),
            req.send(),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, text, json)
    }

    async fn create(&self, name: &str) -> (u16, Value) {
        let (status, _, json) = self
            .call(
                Method::POST,
                &format!("/api/v1/room/{name}"),
                Some(&self.server.key),
                None,
            )
            .await;
        (status, json)
    }
}

#[tokio::test]
async fn rooms_are_created_and_joined_through_nginx() {
    let edge = Edge::start(&[]).await;
    let s = &edge.server;
    let np = edge.nginx.port;

    // The room API over https.
    let (status, _, health) = edge.call(Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["data"]["freeSlots"], 20, "{health}");
    let (status, _, info) = edge.call(Method::GET, "/api/v1", None, None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["data"]["app"], "chatserver");
    // The key still matters behind nginx.
    let (status, _, _) = edge
        .call(Method::POST, "/api/v1/room/lobby", Some("wrong"), None)
        .await;
    assert_eq!(status, 401);

    let (status, created) = edge.create("lobby").await;
    assert_eq!(status, 200, "{created}");
    let port = created["data"]["port"].as_u64().expect("port") as u16;
    assert!(
        (s.room_ports.0..=s.room_ports.1).contains(&port),
        "{created}"
    );
    assert_eq!(created["data"]["message"], "Room created");
    let url = format!("wss://127.0.0.1:{np}/rooms/{port}");
    assert_eq!(created["data"]["url"], url.as_str(), "{created}");
    // An existing room answers with its url too.
    let (status, again) = edge.create("lobby").await;
    assert_eq!(status, 200);
    assert_eq!(again["data"]["url"], url.as_str(), "{again}");

    // Plain GET of the room through nginx reaches the room's `/`, which
    // answers its name; with or without a trailing slash and a query.
    for path in [
        format!("/rooms/{port}"),
        format!("/rooms/{port}/"),
        format!("/rooms/{port}?name=x&y=1"),
    ] {
        let (status, text, _) = edge.call(Method::GET, &path, None, None).await;
        assert_eq!((status, text.as_str()), (200, "lobby"), "GET {path}");
    }

    // The chat page and its files come through; the join lookup answers
    // the room's URL through nginx.
    let (status, page, _) = edge.call(Method::GET, "/", None, None).await;
    assert_eq!(status, 200, "GET /: {page}");
    assert!(page.contains("/assets/chat.js"), "the chat page: {page}");
    let (status, _, _) = edge.call(Method::GET, "/assets/chat.js", None, None).await;
    assert_eq!(status, 200, "GET /assets/chat.js");
    let (status, _, join) = edge
        .call(Method::GET, "/api/v1/join/lobby", None, None)
        .await;
    assert_eq!(status, 200, "{join}");
    assert_eq!(join["data"]["url"], url.as_str(), "{join}");

    // Two clients chat over wss; the query string reaches the room.
    let mut alice = Wss::join(&edge.https, &format!("{url}?name=alice")).await;
    assert_eq!(alice.welcome["room"], "lobby");
    assert_eq!(alice.welcome["you"]["name"], "alice");
    let mut bob = Wss::join(&edge.https, &format!("{url}/?name=b%C3%B6b&other=ignored")).await;
    assert_eq!(bob.welcome["you"]["name"], "böb", "{}", bob.welcome);
    let joined = alice.recv_type("joined").await;
    assert_eq!(joined["user"]["name"], "böb");

    bob.send_json(json!({"type":"say","text":"hello through nginx","client_id":"c1"}))
        .await;
    let ack = bob.recv_type("ack").await;
    assert_eq!(ack, json!({"type":"ack","client_id":"c1","seq":1}));
    let m = alice.recv_type("message").await;
    assert_eq!(m["text"], "hello through nginx");
    assert_eq!(m["from"]["name"], "böb");
    alice
        .send_json(json!({"type":"say","text":"hi bob","client_id":"c2"}))
        .await;
    let m = bob.recv_type("message").await;
    assert_eq!(m["text"], "hi bob");

    // A refused join (no name) still gets its close code through nginx.
    let mut anon = Wss::connect(&edge.https, &url)
        .await
        .unwrap_or_else(|e| panic!("upgrade without a name: {e:?}"));
    let (code, reason) = anon.expect_close().await.expect("a close frame");
    assert_eq!(code, 4000, "{reason}");
    bob.close().await;
    let left = alice.recv_type("left").await;
    assert_eq!(left["user"]["name"], "böb");
    alice.close().await;
}

#[tokio::test]
async fn only_room_ports_are_proxied_and_the_admin_api_is_not_exposed() {
    let edge = Edge::start(&[]).await;
    let s = &edge.server;
    let (first, last) = s.room_ports;
    let port = s.create_room("inside").await;

    // Inside the range: a room that exists answers; an unused port inside the
    // range is proxied (and fails upstream: 502), which proves the allow list
    // covers the whole range.
    let (status, text, _) = edge
        .call(Method::GET, &format!("/rooms/{port}"), None, None)
        .await;
    assert_eq!((status, text.as_str()), (200, "inside"));
    let unused = [first, last]
        .into_iter()
        .find(|&p| p != port && procs::port_bindable(p));
    if let Some(p) = unused {
        let (status, _, _) = edge
            .call(Method::GET, &format!("/rooms/{p}"), None, None)
            .await;
        assert_eq!(status, 502, "unused room port {p} inside the range");
    }

    // Outside the range, or not a port: 404 from nginx, even for ports that
    // listen on the host (the master's API and admin ports).
    let outside = [
        u32::from(first) - 1,
        u32::from(last) + 1,
        u32::from(s.port),
        u32::from(s.admin_port),
        0,
        22,
        65536,
        99999,
    ];
    for p in outside {
        let path = format!("/rooms/{p}");
        let (status, _, _) = edge.call(Method::GET, &path, None, None).await;
        assert_eq!(status, 404, "GET {path}");
        match Wss::connect(&edge.https, &edge.nginx.wss_url(&format!("{path}?name=x"))).await {
            Ok(_) => panic!("a WebSocket to {path} was accepted"),
            Err((status, _)) => assert_eq!(status, 404, "WebSocket to {path}"),
        }
    }
    for path in [
        format!("/rooms/0{port}"),
        format!("/rooms/{port}/x"),
        format!("/rooms/{port}x"),
        "/rooms/".to_owned(),
        "/rooms".to_owned(),
        "/rooms/abc".to_owned(),
        format!("/room/{port}"),
        format!("/{port}"),
        "/index.html".to_owned(),
        "/assets/admin.js".to_owned(),
    ] {
        let (status, _, _) = edge.call(Method::GET, &path, None, None).await;
        assert_eq!(status, 404, "GET {path}");
    }

    // The admin API is not reachable through nginx: its paths are not on the
    // room API, and nothing else is proxied.
    for (method, path) in [
        (Method::GET, "/api/v1/load"),
        (Method::POST, "/api/v1/drain"),
        (Method::DELETE, "/api/v1/shutdown"),
        (Method::GET, "/metrics"),
        (Method::GET, "/livez"),
        (Method::GET, "/readyz"),
        (Method::GET, "/admin/api/v1/load"),
    ] {
        let (status, text, _) = edge
            .call(method.clone(), path, Some(&s.admin_key), None)
            .await;
        assert_eq!(status, 404, "{method} {path}: {text}");
    }
    // ... and the master is still serving rooms (no shutdown went through).
    let (status, _, health) = edge.call(Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(s.rooms().await.len(), 1);
}

#[tokio::test]
async fn bodies_are_small_and_room_creation_is_rate_limited() {
    // One creation per minute and a burst of 3: the 5th POST in a row from
    // this address is refused.
    let edge = Edge::start(&["--create-rate", "1r/m", "--create-burst", "3"]).await;
    let s = &edge.server;

    // A settings body above 16k is refused by nginx (413) and never reaches
    // the master. (It is the first POST: it uses one slot of the burst.)
    let big = json!({"x": "y".repeat(20 * 1024)}).to_string();
    let (status, _, _) = edge
        .call(Method::POST, "/api/v1/room/big", Some(&s.key), Some(big))
        .await;
    assert_eq!(status, 413);
    assert!(s.room_names().await.is_empty());

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, _) = edge.create("limited").await;
        statuses.push(status);
    }
    let first_refused = statuses
        .iter()
        .position(|&st| st == 429)
        .unwrap_or_else(|| panic!("no 429 among {statuses:?}"));
    assert!(
        statuses[..first_refused].iter().all(|&st| st == 200),
        "{statuses:?}"
    );
    assert!(
        first_refused >= 2,
        "refused too early (burst 3): {statuses:?}"
    );
    assert!(
        statuses[first_refused..].iter().all(|&st| st == 429),
        "{statuses:?}"
    );

    // Only POST is limited: lookups and health still pass.
    for path in ["/api/v1/room/limited", "/api/v1/rooms", "/api/v1/health"] {
        let (status, text, _) = edge.call(Method::GET, path, Some(&s.key), None).await;
        assert_eq!(status, 200, "GET {path}: {text}");
    }
    assert_eq!(s.room_names().await, vec!["limited".to_owned()]);
}

#[tokio::test]
async fn proxied_requests_carry_forwarding_headers_and_the_rewritten_path() {
    // nginx in front of a recording stub, which plays both the room API and
    // a room (its port is the whole room range).
    let stub = HttpStub::start(std::sync::Arc::new(|_req: &edge_common::Request| {
        (200, json!({"stub": true}))
    }))
    .await;
    let certs = Certs::make();
    let np = procs::free_port();
    let nginx = Nginx::start(
        &certs,
        np,
        &EdgeOpts {
            api_upstream: format!("127.0.0.1:{}", stub.port),
            room_ports: (stub.port, stub.port),
            extra: Vec::new(),
        },
    )
    .await;
    let https = certs.client();

    // The room API: path kept, forwarding headers set, a forged X-Real-IP
    // replaced, X-Forwarded-For extended.
    let r = https
        .post(nginx.url("/api/v1/room/hdr?x=1"))
        .header("X-API-Key", "k")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .expect("POST through nginx");
    assert_eq!(r.status().as_u16(), 200);
    let req = stub.requests().pop().expect("the stub saw the request");
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/api/v1/room/hdr?x=1");
    assert_eq!(req.header("x-api-key"), Some("k"));
    assert_eq!(req.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert_eq!(req.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));

    // A room: /rooms/PORT?QUERY becomes /?QUERY with the upgrade headers.
    let query = "token=a.b.c&since=41&epoch=6120943523&name=al%20ice";
    let refused = Wss::connect(
        &https,
        &nginx.wss_url(&format!("/rooms/{}?{query}", stub.port)),
    )
    .await;
    // The stub does not speak WebSocket: it answers 200, which nginx passes.
    assert!(matches!(refused, Err((200, _))), "{:?}", refused.err());
    let req = stub.requests().pop().expect("the stub saw the upgrade");
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, format!("/?{query}"));
    assert_eq!(
        req.header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    assert_eq!(
        req.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("upgrade")
    );
    assert!(req.header("sec-websocket-key").is_some(), "{req:?}");
    assert_eq!(req.header("x-forwarded-proto"), Some("https"));
    assert_eq!(req.header("x-real-ip"), Some("127.0.0.1"));

    // Without a query, the room gets exactly `/`; without an upgrade,
    // `Connection: close`.
    let r = https
        .get(nginx.url(&format!("/rooms/{}/", stub.port)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let req = stub.requests().pop().unwrap();
    assert_eq!(req.target, "/");
    assert_eq!(req.header("connection"), Some("close"));

    // Tokens stay out of the access log (only the path is logged).
    let access =
        std::fs::read_to_string(nginx.prefix.path().join("logs").join("access.log")).unwrap();
    assert!(access.contains("/rooms/"), "{access}");
    assert!(
        !access.contains("token="),
        "the access log shows a token: {access}"
    );
    assert!(
        !access.contains("a.b.c"),
        "the access log shows a token: {access}"
    );
}

/// Runs `nginx/render` with `args` (cert and key given), returning the
/// output.
fn render(args: &[&str]) -> std::process::Output {
    edge_common::run(
        Command::new("sh")
            .arg(edge_common::render_script())
            .args(["--cert", "/c.pem", "--key", "/k.pem", "--no-mkdir"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin"),
    )
}

#[tokio::test]
async fn render_covers_exactly_the_range_and_refuses_bad_input() {
    let nginx = edge_common::nginx_bin();
    let certs = Certs::make();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    let out = render(&[
        "--prefix",
        dir.path().to_str().unwrap(),
        "--out",
        conf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    // Defaults: 443, the master on 127.0.0.1:80, rooms 20000-20999.
    assert!(text.contains("listen 443 ssl;"), "{text}");
    assert!(text.contains("server 127.0.0.1:80;"), "{text}");
    assert!(text.contains("client_max_body_size 16k;"));
    assert!(text.contains("proxy_read_timeout 75s;"));
    assert!(text.contains("limit_req zone=chat_room_create"));
    assert!(!text.contains("${"), "a placeholder was left: {text}");
    let entries: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            (v == format!("127.0.0.1:{k};")).then(|| k.parse().ok())?
        })
        .collect();
    assert_eq!(entries, (20000..=20999).collect::<Vec<u32>>());

    // The real nginx accepts it (with the real certificate paths).
    let out = render(&[
        "--prefix",
        dir.path().to_str().unwrap(),
        "--out",
        conf.to_str().unwrap(),
        "--cert",
        certs.cert.to_str().unwrap(),
        "--key",
        certs.key.to_str().unwrap(),
        "--room-ports",
        "1-65535",
        "--http-port",
        "8080",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let out = Nginx::check(&conf, dir.path());
    assert!(
        out.status.success(),
        "{} -t: {}",
        nginx.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad input is refused with a message and no output file.
    for bad in [
        &["--room-ports", "5-4"][..],
        &["--room-ports", "0-10"],
        &["--room-ports", "34000"],
        &["--room-ports", "1-65536"],
        &["--listen-port", "x"],
        &["--server-name", "a;b"],
        &["--server-name", "a b"],
        &["--server-name", "a$b"],
        &["--api-upstream", "nohost"],
        &["--create-rate", "fast"],
        &["--bogus"],
    ] {
        let target = dir.path().join("bad.conf");
        let mut args = bad.to_vec();
        args.extend(["--out", target.to_str().unwrap()]);
        let out = render(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nginx/render"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!target.exists(), "{bad:?} wrote {}", target.display());
    }
    // No certificate: refused.
    let out = edge_common::run(
        Command::new("sh")
            .arg(edge_common::render_script())
            .arg("--no-mkdir")
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    assert!(!out.status.success());
}
