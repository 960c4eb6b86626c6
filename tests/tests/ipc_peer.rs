//! The IPC socket trusts only the master's own room workers: a process of
//! the same user that connects with a forged `Hello` (a room's name and its
//! worker's pid, both visible in the admin API and `ps`) gets no snapshot
//! and no secret, cannot get a pid adopted, and does not knock the real
//! worker off its link. The socket is 0600 in a 0700 run directory.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use chat_shared::framing::{FrameReader, FrameWriter, decode};
use chat_shared::ipc::{Hello, HelloReply};
use chat_tests::{Client, Server, ServerOpts, TIMEOUT, token};
use tokio::net::UnixStream;

/// Sends `hello` as a worker would; the master's answer, decoded when it is
/// a `HelloReply`, and its raw bytes (none when the master just closed).
async fn pose_as_worker(socket: &Path, hello: &Hello) -> (Option<HelloReply>, Vec<u8>) {
    let stream = UnixStream::connect(socket)
        .await
        .expect("connect to master.sock");
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(r), FrameWriter::new(w));
    writer.send(hello).await.expect("send the hello");
    let answer = tokio::time::timeout(TIMEOUT, reader.next_raw())
        .await
        .expect("the master answers or closes in time");
    match answer {
        Ok(Some(buf)) => (decode::<HelloReply>(&buf).ok(), buf.to_vec()),
        _ => (None, Vec::new()),
    }
}

#[track_caller]
fn assert_refused(what: &str, (reply, raw): &(Option<HelloReply>, Vec<u8>), secret: &str) {
    assert!(
        !matches!(reply, Some(HelloReply::Accepted(_))),
        "{what}: the master accepted a forged hello and sent its snapshot"
    );
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "{what}: the JWT secret went to a foreign process"
    );
}

#[tokio::test]
async fn a_process_posing_as_a_worker_is_refused_and_the_worker_stays_linked() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().expect("a JWT secret");
    let port = s.create_room("guarded").await;
    let pid = s.room_pid("guarded").await;
    let socket = s.run_dir.join("master.sock");

    // Owner only: the harness made the run dir with the umask's mode.
    let dir_mode = std::fs::metadata(&s.run_dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "run dir mode {dir_mode:o}");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "socket mode {:o}",
        meta.permissions().mode()
    );

    // The real worker's name and pid, from another process.
    let mut forged = Hello::new("guarded".into(), pid as u32, port);
    forged.listening = true;
    let answer = pose_as_worker(&socket, &forged).await;
    assert_refused("a hello with the worker's pid", &answer, &secret);

    // Its own pid, for a room nobody runs: no adoption.
    let mut ghost = Hello::new("ghost".into(), std::process::id(), s.room_ports.1);
    ghost.listening = true;
    let answer = pose_as_worker(&socket, &ghost).await;
    assert_refused("a hello asking for adoption", &answer, &secret);
    assert!(
        !s.room_names().await.contains(&"ghost".to_owned()),
        "a foreign pid was adopted as a room"
    );

    // Its own pid for the existing room.
    let own = Hello::new("guarded".into(), std::process::id(), port);
    let answer = pose_as_worker(&socket, &own).await;
    assert_refused("a hello with its own pid", &answer, &secret);

    // The real worker is still the room's, and still linked: a message is
    // acknowledged only once the master reports it stored over IPC.
    assert_eq!(s.room_pid("guarded").await, pid);
    let mut c = Client::with_token(port, &token::member(&secret, "alice", "guarded")).await;
    let seq = tokio::time::timeout(TIMEOUT, c.say_acked("still linked"))
        .await
        .expect("the message is acked: the worker's link survived");
    assert!(seq > 0);
    assert!(
        s.logs().contains("not a room worker"),
        "the master logs the refusal"
    );
}
