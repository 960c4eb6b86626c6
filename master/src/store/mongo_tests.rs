//! MongoDB backend tests, against an nx-27017 server (a MongoDB wire-protocol
//! server over SQLite, from PyPI) that each test starts on a free port.
//! The binary comes from `NX27017_BIN`, else `<workspace>/.venv/bin/nx-27017`
//! (`python3 -m venv .venv && .venv/bin/pip install nx-27017`). A missing or
//! broken server fails the test: it is never skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId};

use super::mongo_store::{MongoOptions, MongoStore};
use super::suite;
use super::{BanRecord, FilterAction, FilterRecord, RoomRecord, Store, UserRecord};

/// A running nx-27017, killed on drop.
struct NxServer {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

fn nx_binary() -> PathBuf {
    match std::env::var_os("NX27017_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nx-27017"),
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl NxServer {
    async fn start() -> Self {
        let bin = nx_binary();
        assert!(
            bin.exists(),
            "nx-27017 not found at {} — the MongoDB tests need it: run \
             `python3 -m venv .venv && .venv/bin/pip install nx-27017` in the workspace, \
             or set NX27017_BIN",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("nx.log");
        let port = free_port();
        let out = std::fs::File::create(dir.path().join("nx.out")).expect("nx.out");
        let err = out.try_clone().expect("nx.out");
        let child = Command::new(&bin)
            .args(["--db", "memory", "--host", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("--log-file")
            .arg(&log)
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self {
            child,
            port,
            log,
            dir,
        };
        server.wait_ready().await;
        server
    }

    fn output(&self) -> String {
        let out = std::fs::read_to_string(self.dir.path().join("nx.out")).unwrap_or_default();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- stdout/stderr ---\n{out}\n--- log ---\n{log}")
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nx-27017 exited at start ({status})\n{}", self.output());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nx-27017 did not accept connections on port {} within 30 s\n{}",
                self.port,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn uri(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for NxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(server: &NxServer) -> MongoStore {
    let store = MongoStore::connect(&server.uri("chat_test"), MongoOptions::default())
        .await
        .expect("connect");
    // The port accepts before the server answers: retry the first ping.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.ping().await {
            Ok(()) => return store,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "nx-27017 not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("nx-27017 does not answer ping: {e}\n{}", server.output()),
        }
    }
}

async fn insert_raw(store: &MongoStore, coll: &str, docs: Vec<Document>) {
    store
        .database()
        .collection::<Document>(coll)
        .insert_many(docs)
        .await
        .unwrap_or_else(|e| panic!("raw insert into {coll}: {e}"));
}

/// What a platform might write by hand: valid in unusual forms, and broken.
async fn insert_platform_docs(store: &MongoStore) -> ObjectId {
    let eve = ObjectId::new();
    insert_raw(
        store,
        "users",
        vec![
            doc! { "_id": "p-carol", "name": "Carol", "roles": ["moderator"] },
            doc! { "_id": "p-dave", "name": "Dave" },
            doc! { "_id": eve, "name": "Eve", "roles": "admin" },
            doc! { "_id": "p-bad1" },
            doc! { "_id": "p-bad2", "name": 42 },
            doc! { "_id": "p-bad3", "name": "X", "roles": 5 },
            doc! { "_id": "p-bad4", "name": "X", "roles": ["ok", 1] },
        ],
    )
    .await;
    insert_raw(
        store,
        "bans",
        vec![
            doc! { "user_id": "p-carol", "until": DateTime::from_millis(1_893_456_000_000) },
            doc! { "user_id": "p-dave", "room": "lobby", "until": 1_893_456_000_000_i64, "reason": "r" },
            doc! { "user_id": "p-eve", "room": Bson::Null, "until": Bson::Null },
            doc! { "room": "lobby" },
            doc! { "user_id": "p-bad", "until": "soon" },
            doc! { "user_id": "p-bad", "room": 7 },
        ],
    )
    .await;
    insert_raw(
        store,
        "filters",
        vec![
            doc! { "pattern": "p-heck", "action": "mask" },
            doc! { "pattern": "p-scam", "action": "REJECT" },
            doc! { "pattern": "p-x", "action": "explode" },
            doc! { "action": "mask" },
            doc! { "pattern": "", "action": "mask" },
        ],
    )
    .await;
    insert_raw(
        store,
        "rooms",
        vec![
            doc! { "_id": "p-hand", "port": 9100 },
            doc! { "_id": "p-badport", "port": "x" },
            doc! { "_id": "p-noport", "status": "ready" },
            doc! { "_id": ObjectId::new(), "port": 9101 },
        ],
    )
    .await;
    insert_raw(
        store,
        "messages",
        vec![
            doc! { "room": "p-room", "seq": 1_i32, "epoch": 1_i32, "user_id": "u", "text": "one" },
            doc! { "room": "p-room", "seq": 2_i32, "epoch": 1_i32, "user_id": "u" },
            doc! { "room": "p-room", "seq": 3_i64, "epoch": 1_i64, "user_id": "u", "text": "three",
            "name": "U", "ts": DateTime::from_millis(1_700_000_000_000), "deleted": false },
            doc! { "room": "p-room2", "seq": 1, "epoch": 4, "user_id": "u", "text": "ok" },
            doc! { "room": "p-room2", "seq": -5, "epoch": 4, "user_id": "u", "text": "neg" },
        ],
    )
    .await;
    eve
}

async fn check_platform_docs(store: &MongoStore, eve: ObjectId) {
    let data = store.load_reference().await.expect("load");
    let mut users: Vec<_> = data
        .users
        .into_iter()
        .filter(|u| !u.id.starts_with("s-"))
        .collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![
        UserRecord {
            id: eve.to_hex(),
            name: "Eve".into(),
            roles: vec!["admin".into()],
        },
        UserRecord {
            id: "p-carol".into(),
            name: "Carol".into(),
            roles: vec!["moderator".into()],
        },
        UserRecord {
            id: "p-dave".into(),
            name: "Dave".into(),
            roles: vec![],
        },
    ];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(users, expected);

    let mut bans: Vec<_> = data
        .bans
        .into_iter()
        .filter(|b| !b.user_id.starts_with("s-"))
        .collect();
    bans.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(
        bans,
        [
            BanRecord {
                user_id: "p-carol".into(),
                room: None,
                until_ms: Some(1_893_456_000_000),
                reason: None,
            },
            BanRecord {
                user_id: "p-dave".into(),
                room: Some("lobby".into()),
                until_ms: Some(1_893_456_000_000),
                reason: Some("r".into()),
            },
            BanRecord {
                user_id: "p-eve".into(),
                room: None,
                until_ms: None,
                reason: None,
            },
        ]
    );
    let mut filters: Vec<_> = data
        .filters
        .into_iter()
        .filter(|f| !f.pattern.starts_with("s-"))
        .collect();
    filters.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    assert_eq!(
        filters,
        [
            FilterRecord {
                pattern: "p-heck".into(),
                action: FilterAction::Mask
            },
            FilterRecord {
                pattern: "p-scam".into(),
                action: FilterAction::Reject
            },
        ]
    );

    let rooms: Vec<_> = store
        .rooms()
        .await
        .expect("rooms")
        .into_iter()
        .filter(|r| !r.name.starts_with("s-"))
        .collect();
    assert_eq!(
        rooms,
        [RoomRecord {
            name: "p-hand".into(),
            port: 9100,
            settings: serde_json::json!({}),
            status: "ready".into(),
            epoch: 0,
            created_ms: 0,
            updated_ms: 0,
        }]
    );

    let history = store
        .history("p-room", u64::MAX, 10)
        .await
        .expect("history");
    let seqs: Vec<_> = history.iter().map(|m| (m.seq, m.text.as_str())).collect();
    assert_eq!(seqs, [(1, "one"), (3, "three")]);
    assert_eq!(history[1].ts, 1_700_000_000_000);
    assert_eq!(store.last_seq("p-room").await.expect("last"), Some((1, 3)));
    // A negative seq is skipped; the valid one below is used.
    let history = store
        .history("p-room2", u64::MAX, 10)
        .await
        .expect("history");
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(store.last_seq("p-room2").await.expect("last"), Some((4, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_mongo_suite() {
    let server = NxServer::start().await;
    let store = connect(&server).await;
    store.init().await.expect("init");
    let eve = insert_platform_docs(&store).await;
    let store = Arc::new(store);
    suite::run_all(Arc::clone(&store) as Arc<dyn Store>).await;
    check_platform_docs(&store, eve).await;
    // The writes are what docs/DATA.md shows.
    let raw = store
        .database()
        .collection::<Document>("messages")
        .find_one(doc! { "room": "s-alpha", "seq": 3_i64 })
        .await
        .expect("find_one")
        .expect("message 3");
    for key in [
        "room", "epoch", "seq", "user_id", "name", "text", "ts", "deleted",
    ] {
        assert!(raw.contains_key(key), "{key} missing in {raw}");
    }
    // nx-27017 turns `$set: {deleted: true}` into 1; MongoDB keeps true.
    assert!(
        matches!(
            raw.get("deleted"),
            Some(Bson::Boolean(true) | Bson::Int32(1) | Bson::Int64(1))
        ),
        "{raw}"
    );
    drop(server);
}

#[tokio::test]
async fn store_mongo_open_uses_the_uri() {
    let server = NxServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = super::open(Some(&server.uri("chat_open")), dir.path())
        .await
        .expect("open");
    assert_eq!(store.kind(), "mongodb");
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = store.ping().await {
        assert!(Instant::now() < deadline, "ping: {e}\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!dir.path().join(super::redb_store::FILE_NAME).exists());
}

#[tokio::test]
async fn store_mongo_down_errors_quickly() {
    // A port nobody listens on.
    let port = free_port();
    let opts = MongoOptions {
        server_selection_timeout: Duration::from_millis(500),
        database: None,
    };
    let store = MongoStore::connect(&format!("mongodb://127.0.0.1:{port}"), opts)
        .await
        .expect("connect is lazy");
    let started = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(store.rooms().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
