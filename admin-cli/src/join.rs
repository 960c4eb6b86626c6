//! `chatctl join`: a terminal chat client of one room. Reads lines from
//! stdin (a terminal or a pipe): plain text is said, `/w USER text` whispers,
//! `/history` asks for history, `/quit` leaves. When stdin ends, the socket
//! is closed cleanly (after the server has processed everything sent).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use chat_shared::protocol::{ChatMessage, Role, ServerMsg, close};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use url::Url;

use crate::commands::{Ctx, check_room_name, no_room};

/// How long the room gets to answer our close (and a final ping).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The room to join.
    pub room: String,
    /// Join as a guest with this display name (default: $USER).
    #[arg(long, conflicts_with = "token")]
    pub name: Option<String>,
    /// Join with a token (see `chatctl token`).
    #[arg(long, env = "CHATCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The room's port (default: asked from the admin API).
    #[arg(long)]
    pub port: Option<u16>,
    /// Host of the room (default: the admin API's host, else 127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,
}

/// What a line of input asks for.
#[derive(Debug, PartialEq)]
pub enum Input {
    Nothing,
    Say(String),
    Whisper { to: String, text: String },
    History(Option<u32>),
    Quit,
    Help,
    Bad(String),
}

pub fn parse_input(line: &str) -> Input {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    if let Some(rest) = line.strip_prefix("//") {
        return Input::Say(format!("/{rest}"));
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Input::Say(line.to_owned());
    };
    let (word, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    let rest = rest.trim_start();
    match word {
        "quit" | "q" | "exit" => Input::Quit,
        "help" | "?" => Input::Help,
        "history" => match rest.trim() {
            "" => Input::History(None),
            n => match n.parse() {
                Ok(n) => Input::History(Some(n)),
                Err(_) => Input::Bad(format!("/history takes a number, not {n:?}")),
            },
        },
        "w" | "whisper" => match rest.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Input::Whisper {
                to: to.to_owned(),
                text: text.trim_start().to_owned(),
            },
            _ => Input::Bad("usage: /w USER text".into()),
        },
        other => Input::Bad(format!("unknown command /{other} (try /help)")),
    }
}

const HELP: &str = "text        say text\n\
/w USER text  whisper to USER (a user id, or a member's name)\n\
/history [N]  ask for the last messages\n\
//text       say text starting with /\n\
/quit        leave the room";

/// The WebSocket URL of a room.
pub fn ws_url(host: &str, port: u16, name: Option<&str>, token: Option<&str>) -> Result<Url> {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut url = Url::parse(&format!("ws://{host}:{port}/"))
        .with_context(|| format!("invalid host {host:?}"))?;
    match (token, name) {
        (Some(t), _) => {
            url.query_pairs_mut().append_pair("token", t);
        }
        (None, Some(n)) => {
            url.query_pairs_mut().append_pair("name", n);
        }
        (None, None) => {}
    }
    Ok(url)
}

fn role_name(role: Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{role:?}"))
}

fn fmt_message(m: &ChatMessage) -> String {
    if m.deleted {
        format!("[{}] {}: (deleted)", m.seq, m.from.name)
    } else {
        format!("[{}] {}: {}", m.seq, m.from.name, m.text)
    }
}

/// The client's view of the room.
#[derive(Default)]
struct Session {
    /// Member ids to names.
    members: HashMap<String, String>,
    /// Says waiting for their ack: client id → text.
    pending: HashMap<String, String>,
    welcomed: bool,
    my_name: String,
    next_id: u64,
}

impl Session {
    /// A frame as lines for the terminal (empty: nothing to show).
    fn render(&mut self, msg: ServerMsg) -> Vec<String> {
        match msg {
            ServerMsg::Welcome {
                room,
                you,
                members,
                member_count,
                history,
                ..
            } => {
                self.welcomed = true;
                self.my_name = you.name.clone();
                self.members = members
                    .iter()
                    .map(|m| (m.id.clone(), m.name.clone()))
                    .collect();
                self.members.insert(you.id.clone(), you.name.clone());
                let names: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} ({})", m.name, m.id))
                    .collect();
                let mut out = vec![format!(
                    "* joined room {room} as {} ({}, {}); {member_count} members: {}{}",
                    you.name,
                    you.id,
                    role_name(you.role),
                    if names.is_empty() {
                        "-".into()
                    } else {
                        names.join(", ")
                    },
                    if (member_count as usize) > members.len() {
                        ", …"
                    } else {
                        ""
                    }
                )];
                out.extend(history.iter().map(fmt_message));
                out
            }
            ServerMsg::Joined { user } => {
                self.members.insert(user.id.clone(), user.name.clone());
                vec![format!("* {} ({}) joined", user.name, user.id)]
            }
            ServerMsg::Left { user } => {
                self.members.remove(&user.id);
                vec![format!("* {} ({}) left", user.name, user.id)]
            }
            ServerMsg::MembersChanged {
                joined,
                left,
                more,
                member_count,
            } => {
                for u in &left {
                    self.members.remove(&u.id);
                }
                for u in &joined {
                    self.members.insert(u.id.clone(), u.name.clone());
                }
                let names = |v: Vec<&str>| {
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.join(", ")
                    }
                };
                vec![format!(
                    "* {member_count} members; joined: {}; left: {}{}",
                    names(joined.iter().map(|u| u.name.as_str()).collect()),
                    names(left.iter().map(|u| u.name.as_str()).collect()),
                    if more { " (and more)" } else { "" }
                )]
            }
            ServerMsg::Message(m) => vec![fmt_message(&m)],
            ServerMsg::Ack { client_id, seq, .. } => {
                match client_id.and_then(|c| self.pending.remove(&c)) {
                    Some(text) => vec![format!("[{seq}] {}: {text}", self.my_name)],
                    None => Vec::new(),
                }
            }
            ServerMsg::Whisper { from, to, text, .. } => {
                vec![format!("(whisper) {} → {}: {text}", from.name, to.name)]
            }
            ServerMsg::History { messages, more } => {
                let mut out = vec![format!(
                    "* history: {} messages{}",
                    messages.len(),
                    if more { " (more before)" } else { "" }
                )];
                out.extend(messages.iter().map(fmt_message));
                out
            }
            ServerMsg::Members { members, more } => {
                for m in &members {
                    self.members.insert(m.id.clone(), m.name.clone());
                }
                let names: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} ({})", m.name, m.id))
                    .collect();
                vec![format!(
                    "* members: {}{}",
                    if names.is_empty() {
                        "-".into()
                    } else {
                        names.join(", ")
                    },
                    if more { " (more)" } else { "" }
                )]
            }
            ServerMsg::Typing { .. } | ServerMsg::Pong => Vec::new(),
            ServerMsg::Deleted { seq, by } => {
                vec![format!("* message [{seq}] deleted by {}", by.name)]
            }
            ServerMsg::Muted { user, secs, by } => {
                vec![format!("* {} muted for {secs}s by {}", user.name, by.name)]
            }
            ServerMsg::Signal { from, data } => {
                vec![format!("* signal from {}: {data}", from.name)]
            }
            ServerMsg::Notice { text } => vec![format!("! notice: {text}")],
            ServerMsg::Closing { reason, in_secs } => vec![match in_secs {
                Some(s) => format!("! room closing in {s}s: {reason}"),
                None => format!("! room closing: {reason}"),
            }],
            ServerMsg::Error {
                code,
                message,
                retry_after_ms,
                ..
            } => vec![match retry_after_ms {
                Some(ms) => format!("! error {code}: {message} (retry after {ms} ms)"),
                None => format!("! error {code}: {message}"),
            }],
            ServerMsg::Dm(m) => vec![format!(
                "[dm {}#{}] {}: {}",
                m.conversation, m.seq, m.from.name, m.text
            )],
            ServerMsg::DmHistory { with, messages, .. } => {
                let mut lines = vec![format!("-- direct messages with {with} --")];
                lines.extend(
                    messages
                        .iter()
                        .map(|m| format!("[dm #{}] {}: {}", m.seq, m.from.name, m.text)),
                );
                lines
            }
            ServerMsg::Read { .. } => Vec::new(),
            ServerMsg::Presence { user, online, .. } => vec![format!(
                "! {user} is {}",
                if online { "online" } else { "offline" }
            )],
            ServerMsg::Blocked { user, blocked } => vec![format!(
                "! {user} {}",
                if blocked { "blocked" } else { "unblocked" }
            )],
        }
    }

    /// A user id from an id or a unique member name.
    fn resolve(&self, who: &str) -> String {
        if self.members.contains_key(who) {
            return who.to_owned();
        }
        let by_name: Vec<&String> = self
            .members
            .iter()
            .filter(|(_, n)| n.as_str() == who)
            .map(|(id, _)| id)
            .collect();
        match by_name.as_slice() {
            [id] => (*id).clone(),
            _ => who.to_owned(),
        }
    }

    /// The frame for a line of input, or what to tell the user.
    fn frame(&mut self, input: Input) -> Option<Value> {
        match input {
            Input::Say(text) => {
                self.next_id += 1;
                let cid = format!("c{}", self.next_id);
                self.pending.insert(cid.clone(), text.clone());
                Some(json!({"type": "say", "text": text, "client_id": cid}))
            }
            Input::Whisper { to, text } => {
                Some(json!({"type": "whisper", "to": self.resolve(&to), "text": text}))
            }
            Input::History(limit) => Some(match limit {
                Some(n) => json!({"type": "history", "limit": n}),
                None => json!({"type": "history"}),
            }),
            _ => None,
        }
    }
}

fn close_text(code: u16, reason: &str) -> String {
    let name = match code {
        close::NORMAL => "normal",
        close::GOING_AWAY => "going away",
        close::POLICY => "policy violation",
        close::TOO_BIG => "message too big",
        close::TRY_AGAIN_LATER => "try again later",
        close::BAD_REQUEST => "bad request",
        close::UNAUTHORIZED => "unauthorized",
        close::TOKEN_EXPIRED => "token expired",
        close::WRONG_ROOM => "wrong room",
        close::GUESTS_NOT_ALLOWED => "guests not allowed",
        close::ROOM_FULL => "room full",
        close::BANNED => "banned",
        close::KICKED => "kicked",
        close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
        1005 => "no status",
        1006 => "abnormal",
        1011 => "server error",
        _ => "",
    };
    match (name.is_empty(), reason.is_empty()) {
        (true, true) => format!("{code}"),
        (true, false) => format!("{code}: {reason}"),
        (false, true) => format!("{code} ({name})"),
        (false, false) => format!("{code} ({name}): {reason}"),
    }
}

/// Finds the room's host and port.
async fn locate(ctx: &Ctx, args: &JoinArgs) -> Result<(String, u16)> {
    let admin_host = || {
        ctx.locator
            .admin_url_opt()
            .and_then(|u| u.host_str().map(str::to_owned))
    };
    if let Some(port) = args.port {
        let host = args
            .host
            .clone()
            .or_else(admin_host)
            .unwrap_or_else(|| "127.0.0.1".into());
        return Ok((host, port));
    }
    let admin = ctx
        .admin()
        .context("cannot find the room's port (use --port)")?;
    let d = admin
        .call(Method::GET, &["api", "v1", "rooms", &args.room], None)
        .await
        .map_err(no_room(&args.room))?;
    let port = d["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    if port == 0 {
        bail!(
            "room {} has no port (status {})",
            args.room,
            d["status"].as_str().unwrap_or("unknown")
        );
    }
    let host = args
        .host
        .clone()
        .or_else(|| admin.base().host_str().map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1".into());
    Ok((host, port))
}

/// Reads stdin lines into a channel (a terminal or a pipe alike).
fn read_stdin() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    rx
}

fn out(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

pub async fn run(ctx: &Ctx, args: JoinArgs) -> Result<()> {
    check_room_name(&args.room)?;
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    let default_name = std::env::var("USER").ok().filter(|u| !u.trim().is_empty());
    let name = args
        .name
        .clone()
        .or(default_name)
        .unwrap_or_else(|| "chatctl".into());
    let (host, port) = locate(ctx, &args).await?;
    let url = ws_url(&host, port, Some(&name), token)?;
    let shown = format!("ws://{host}:{port}/");
    let (ws, _) = tokio::time::timeout(ctx.timeout, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .map_err(|_| {
            anyhow!(
                "cannot connect to room {} at {shown}: no answer within {}",
                args.room,
                humantime::format_duration(ctx.timeout)
            )
        })?
        .map_err(|e| anyhow!("cannot connect to room {} at {shown}: {e}", args.room))?;
    let (mut sink, mut stream) = ws.split();
    let mut input = read_stdin();
    let mut stdin_open = true;
    let mut session = Session::default();
    // Set once we started leaving: a ping was sent, then our close.
    let mut leaving: Option<Instant> = None;
    let mut close_sent = false;
    let mut server_close: Option<(u16, String)> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let send_timeout = ctx.timeout;

    macro_rules! send {
        ($msg:expr) => {
            match tokio::time::timeout(send_timeout, sink.send($msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("connection to room {} lost: {e}", args.room),
                Err(_) => bail!("connection to room {} stalled (send timed out)", args.room),
            }
        };
    }

    loop {
        let leave_deadline = leaving.map(|t| t + CLOSE_WAIT);
        tokio::select! {
            frame = stream.next() => match frame {
                None => break,
                Some(Err(e)) => {
                    if close_sent || server_close.is_some() {
                        break;
                    }
                    bail!("connection to room {} lost: {e}", args.room);
                }
                Some(Ok(Message::Text(t))) => {
                    if ctx.json {
                        println!("{}", t.as_str());
                    }
                    match serde_json::from_str::<ServerMsg>(t.as_str()) {
                        Ok(ServerMsg::Pong) if leaving.is_some() && !close_sent => {
                            // Everything we sent was processed: now close.
                            send!(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })));
                            close_sent = true;
                        }
                        Ok(msg) => {
                            let lines = session.render(msg);
                            if !ctx.json {
                                out(lines);
                            }
                        }
                        Err(_) if !ctx.json => println!("? {}", t.as_str()),
                        Err(_) => {}
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let (code, reason) = f
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    if ctx.json {
                        println!("{}", json!({"type": "close", "code": code, "reason": reason}));
                    } else {
                        println!("* connection closed: {}", close_text(code, &reason));
                    }
                    server_close = Some((code, reason));
                }
                Some(Ok(_)) => {}
            },
            line = input.recv(), if session.welcomed && stdin_open && leaving.is_none() => {
                let parsed = match line {
                    None => { stdin_open = false; Input::Quit }
                    Some(l) => parse_input(&l),
                };
                match parsed {
                    Input::Nothing => {}
                    Input::Help => eprintln!("{HELP}"),
                    Input::Bad(why) => eprintln!("chatctl: {why}"),
                    Input::Quit => {
                        send!(Message::text(json!({"type": "ping"}).to_string()));
                        leaving = Some(Instant::now());
                    }
                    other => {
                        if let Some(frame) = session.frame(other) {
                            send!(Message::text(frame.to_string()));
                        }
                    }
                }
            },
            _ = &mut ctrl_c, if leaving.is_none() => {
                send!(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })));
                close_sent = true;
                leaving = Some(Instant::now());
            },
            _ = async {
                match leave_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                if !close_sent {
                    // No pong in time: close anyway.
                    send!(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })));
                    close_sent = true;
                    leaving = Some(Instant::now());
                } else {
                    bail!("room {} did not answer the close within {}s", args.room, CLOSE_WAIT.as_secs());
                }
            },
        }
    }
    if close_sent {
        return Ok(());
    }
    match server_close {
        Some((close::NORMAL, _)) => Ok(()),
        Some((code, reason)) => bail!(
            "room {} closed the connection: {}",
            args.room,
            close_text(code, &reason)
        ),
        None => bail!(
            "room {} ended the connection without a close frame",
            args.room
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert_eq!(parse_input("hello"), Input::Say("hello".into()));
        assert_eq!(parse_input("  "), Input::Nothing);
        assert_eq!(parse_input("//slash"), Input::Say("/slash".into()));
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input("/history"), Input::History(None));
        assert_eq!(parse_input("/history 20"), Input::History(Some(20)));
        assert!(matches!(parse_input("/history x"), Input::Bad(_)));
        assert_eq!(
            parse_input("/w u-1 hi there"),
            Input::Whisper {
                to: "u-1".into(),
                text: "hi there".into()
            }
        );
        assert!(matches!(parse_input("/w u-1"), Input::Bad(_)));
        assert!(matches!(parse_input("/nope"), Input::Bad(_)));
    }

    #[test]
    fn urls() {
        let u = ws_url("127.0.0.1", 34000, Some("Ann B&c"), None).unwrap();
        assert_eq!(u.as_str(), "ws://127.0.0.1:34000/?name=Ann+B%26c");
        let u = ws_url("::1", 34000, Some("x"), Some("t.k.n")).unwrap();
        assert_eq!(u.as_str(), "ws://[::1]:34000/?token=t.k.n");
    }

    #[test]
    fn renders_frames() {
        let mut s = Session::default();
        let w: ServerMsg = serde_json::from_value(json!({"type":"welcome","room":"r","you":{"id":"guest:1","name":"me","role":"guest","connections":1},
            "members":[{"id":"u2","name":"bob","role":"member","connections":1}],
            "history":[{"seq":1,"from":{"id":"u2","name":"bob"},"text":"hi","ts":0}],"seq":1,"epoch":1,"resumed":false})).unwrap();
        let lines = s.render(w);
        assert!(lines[0].contains("joined room r as me"), "{lines:?}");
        assert_eq!(lines[1], "[1] bob: hi");
        assert_eq!(s.resolve("bob"), "u2");
        assert_eq!(s.resolve("nobody"), "nobody");
        let f = s.frame(Input::Say("yo".into())).unwrap();
        let cid = f["client_id"].as_str().unwrap().to_owned();
        let ack: ServerMsg =
            serde_json::from_value(json!({"type":"ack","client_id":cid,"seq":2})).unwrap();
        assert_eq!(s.render(ack), vec!["[2] me: yo".to_owned()]);
        let n: ServerMsg = serde_json::from_value(json!({"type":"notice","text":"hey"})).unwrap();
        assert_eq!(s.render(n), vec!["! notice: hey".to_owned()]);
        assert_eq!(close_text(4007, "spam"), "4007 (kicked): spam");
    }
}
