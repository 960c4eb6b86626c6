//! Records <-> MongoDB documents. Writing produces the documents described in
//! docs/DATA.md; reading is tolerant of what a platform may write by hand
//! (numbers as int32/int64/double, times as dates or unix ms, optional fields
//! missing) and turns anything else into an `Err(reason)` that the caller
//! logs and skips.

use mongodb::bson::{self, Bson, DateTime, Document, doc};

use super::records::DEFAULT_ROOM_STATUS;
use super::{
    BanRecord, FilterAction, FilterRecord, MessageRecord, OwnerRecord, RoomRecord, StoreError,
    UserRecord,
};

/// Why a document was not read.
pub type Malformed = String;

/// A u64 as BSON int64 (BSON has no unsigned integers).
pub fn to_i64(what: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        what,
        reason: format!("{v} exceeds the largest BSON integer"),
    })
}

fn date(what: &'static str, ms: u64) -> Result<Bson, StoreError> {
    Ok(Bson::DateTime(DateTime::from_millis(to_i64(what, ms)?)))
}

/// 2^63: doubles below it that are whole fit an i64 (and a u64) exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// A non-negative integer in any BSON numeric type.
pub(super) fn as_u64(b: &Bson) -> Option<u64> {
    match *b {
        Bson::Int32(v) => u64::try_from(v).ok(),
        Bson::Int64(v) => u64::try_from(v).ok(),
        Bson::Double(v) if v.fract() == 0.0 && (0.0..TWO_POW_63).contains(&v) => Some(v as u64),
        _ => None,
    }
}

/// Unix milliseconds from a BSON date, a number, or an RFC 3339 string.
pub(super) fn as_ms(b: &Bson) -> Option<u64> {
    match b {
        Bson::DateTime(d) => u64::try_from(d.timestamp_millis()).ok(),
        Bson::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|d| u64::try_from(d.timestamp_millis()).ok()),
        other => as_u64(other),
    }
}

fn req<'a>(d: &'a Document, key: &str) -> Result<&'a Bson, Malformed> {
    match d.get(key) {
        None | Some(Bson::Null) => Err(format!("missing {key}")),
        Some(v) => Ok(v),
    }
}

/// A field that is absent or null.
fn opt<'a>(d: &'a Document, key: &str) -> Option<&'a Bson> {
    d.get(key).filter(|v| !matches!(v, Bson::Null))
}

fn req_str(d: &Document, key: &str) -> Result<String, Malformed> {
    match req(d, key)? {
        Bson::String(s) => Ok(s.clone()),
        other => Err(format!(
            "{key} is not a string ({:?})",
            other.element_type()
        )),
    }
}

fn req_u64(d: &Document, key: &str) -> Result<u64, Malformed> {
    let v = req(d, key)?;
    as_u64(v).ok_or_else(|| format!("{key} is not a non-negative integer ({v})"))
}

fn opt_u64(d: &Document, key: &str) -> Result<u64, Malformed> {
    opt(d, key).map_or(Ok(0), |v| {
        as_u64(v).ok_or_else(|| format!("{key} is not a non-negative integer ({v})"))
    })
}

fn opt_ms(d: &Document, key: &str) -> Result<Option<u64>, Malformed> {
    opt(d, key)
        .map(|v| as_ms(v).ok_or_else(|| format!("{key} is not a date or unix ms ({v})")))
        .transpose()
}

fn opt_str(d: &Document, key: &str) -> Result<Option<String>, Malformed> {
    match opt(d, key) {
        None => Ok(None),
        Some(Bson::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{key} is not a string ({:?})",
            other.element_type()
        )),
    }
}

/// An `_id` as text: a string, an integer, or an ObjectId's hex.
fn id_text(d: &Document) -> Result<String, Malformed> {
    match req(d, "_id")? {
        Bson::String(s) => Ok(s.clone()),
        Bson::ObjectId(o) => Ok(o.to_hex()),
        Bson::Int32(v) => Ok(v.to_string()),
        Bson::Int64(v) => Ok(v.to_string()),
        other => Err(format!(
            "_id has an unusable type ({:?})",
            other.element_type()
        )),
    }
}

/// The `_id` of a document, for log lines.
pub fn describe_id(d: &Document) -> String {
    d.get("_id")
        .map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

pub fn room_to_doc(r: &RoomRecord) -> Result<Document, StoreError> {
    let settings = bson::to_bson(&r.settings).map_err(|e| StoreError::Invalid {
        what: "room settings",
        reason: e.to_string(),
    })?;
    Ok(doc! {
        "_id": &r.name,
        "port": i32::from(r.port),
        "settings": settings,
        "status": &r.status,
        "epoch": to_i64("room epoch", r.epoch)?,
        "created": date("room created", r.created_ms)?,
        "updated": date("room updated", r.updated_ms)?,
    })
}

pub fn room_from_doc(d: &Document) -> Result<RoomRecord, Malformed> {
    let name = req_str(d, "_id")?;
    let port = req_u64(d, "port")?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is not a TCP port"))?;
    let settings = match opt(d, "settings") {
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(v) => v.clone().into_relaxed_extjson(),
    };
    Ok(RoomRecord {
        name,
        port,
        settings,
        status: opt_str(d, "status")?.unwrap_or_else(|| DEFAULT_ROOM_STATUS.to_owned()),
        epoch: opt_u64(d, "epoch")?,
        created_ms: opt_ms(d, "created")?.unwrap_or(0),
        updated_ms: opt_ms(d, "updated")?.unwrap_or(0),
    })
}

pub fn message_to_doc(m: &MessageRecord) -> Result<Document, StoreError> {
    Ok(doc! {
        "room": &m.room,
        "epoch": to_i64("message epoch", m.epoch)?,
        "seq": to_i64("message seq", m.seq)?,
        "user_id": &m.user_id,
        "name": &m.name,
        "text": &m.text,
        "ts": to_i64("message ts", m.ts)?,
        "deleted": m.deleted,
    })
}

pub fn message_from_doc(d: &Document) -> Result<MessageRecord, Malformed> {
    Ok(MessageRecord {
        room: req_str(d, "room")?,
        epoch: opt_u64(d, "epoch")?,
        seq: req_u64(d, "seq")?,
        user_id: req_str(d, "user_id")?,
        name: opt_str(d, "name")?.unwrap_or_default(),
        text: req_str(d, "text")?,
        ts: opt_ms(d, "ts")?.unwrap_or(0),
        deleted: match opt(d, "deleted") {
            None => false,
            Some(Bson::Boolean(b)) => *b,
            // nx-27017 stores `$set: {deleted: true}` as the integer 1;
            // hand-written documents may use 0/1 too.
            Some(Bson::Int32(v)) => *v != 0,
            Some(Bson::Int64(v)) => *v != 0,
            Some(other) => return Err(format!("deleted is not a boolean ({other})")),
        },
    })
}

/// `(epoch, seq)` of a message document (projected or whole).
pub fn last_seq_from_doc(d: &Document) -> Result<(u64, u64), Malformed> {
    Ok((opt_u64(d, "epoch")?, req_u64(d, "seq")?))
}

pub fn user_to_doc(u: &UserRecord) -> Document {
    doc! { "_id": &u.id, "name": &u.name, "roles": &u.roles }
}

pub fn user_from_doc(d: &Document) -> Result<UserRecord, Malformed> {
    let roles = match opt(d, "roles") {
        None => Vec::new(),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|r| match r {
                Bson::String(s) => Ok(s.clone()),
                other => Err(format!("a role is not a string ({other})")),
            })
            .collect::<Result<_, _>>()?,
        // A lone role written as a string.
        Some(Bson::String(s)) => vec![s.clone()],
        Some(other) => return Err(format!("roles is not an array ({other})")),
    };
    Ok(UserRecord {
        id: id_text(d)?,
        name: req_str(d, "name")?,
        roles,
    })
}

pub fn ban_to_doc(b: &BanRecord) -> Result<Document, StoreError> {
    let mut d = doc! { "user_id": &b.user_id };
    if let Some(room) = &b.room {
        d.insert("room", room);
    }
    if let Some(until) = b.until_ms {
        d.insert("until", date("ban until", until)?);
    }
    if let Some(reason) = &b.reason {
        d.insert("reason", reason);
    }
    Ok(d)
}

/// The filter that finds the ban of the same user and scope as `b`.
pub fn ban_scope(b: &BanRecord) -> Document {
    match &b.room {
        Some(room) => doc! { "user_id": &b.user_id, "room": room },
        // Matches a missing room and an explicit null alike.
        None => doc! { "user_id": &b.user_id, "room": Bson::Null },
    }
}

pub fn ban_from_doc(d: &Document) -> Result<BanRecord, Malformed> {
    Ok(BanRecord {
        user_id: req_str(d, "user_id")?,
        room: opt_str(d, "room")?,
        until_ms: opt_ms(d, "until")?,
        reason: opt_str(d, "reason")?,
    })
}

pub fn filter_to_doc(f: &FilterRecord) -> Document {
    doc! { "pattern": &f.pattern, "action": f.action.as_str() }
}

pub fn filter_from_doc(d: &Document) -> Result<FilterRecord, Malformed> {
    let pattern = req_str(d, "pattern")?;
    if pattern.is_empty() {
        return Err("pattern is empty".to_owned());
    }
    let action = req_str(d, "action")?;
    let action =
        FilterAction::parse(&action).ok_or_else(|| format!("unknown action {action:?}"))?;
    Ok(FilterRecord { pattern, action })
}

/// An owner claim; `_id` is the room name (unique: one owner per name).
pub fn owner_to_doc(o: &OwnerRecord) -> Result<Document, StoreError> {
    Ok(doc! {
        "_id": &o.name,
        "owner": &o.owner,
        "host": &o.host,
        "port": i32::from(o.port),
        "url": o.url.as_deref().map_or(Bson::Null, |u| Bson::String(u.to_owned())),
        "until_ms": to_i64("lease end", o.until_ms)?,
    })
}

pub fn owner_from_doc(d: &Document) -> Result<OwnerRecord, Malformed> {
    Ok(OwnerRecord {
        name: id_text(d)?,
        owner: req_str(d, "owner")?,
        host: opt_str(d, "host")?.unwrap_or_default(),
        port: u16::try_from(opt_u64(d, "port")?).map_err(|_| "port out of range".to_owned())?,
        url: opt_str(d, "url")?,
        until_ms: req_u64(d, "until_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_docs_round_trip() {
        let room = RoomRecord {
            name: "lobby".into(),
            port: 9001,
            settings: serde_json::json!({"max_members": 50, "topic": "hi", "ratio": 0.5}),
            status: "ready".into(),
            epoch: 4,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_500,
        };
        let d = room_to_doc(&room).expect("room doc");
        assert_eq!(room_from_doc(&d), Ok(room));
        let ban = BanRecord {
            user_id: "u".into(),
            room: None,
            until_ms: Some(5),
            reason: Some("spam".into()),
        };
        let d = ban_to_doc(&ban).expect("ban doc");
        assert!(!d.contains_key("room"));
        assert_eq!(ban_from_doc(&d), Ok(ban));
    }

    #[test]
    fn store_docs_tolerate_hand_written_forms() {
        let d = doc! { "_id": "r", "port": 9002.0 };
        let r = room_from_doc(&d).expect("minimal room");
        assert_eq!((r.port, r.status.as_str(), r.epoch), (9002, "ready", 0));
        let d = doc! { "user_id": "u", "until": "2030-01-01T00:00:00Z", "room": Bson::Null };
        let b = ban_from_doc(&d).expect("ban");
        assert_eq!(b.until_ms, Some(1_893_456_000_000));
        assert_eq!(b.room, None);
        let d = doc! { "user_id": "u", "until": 1_893_456_000_000_i64 };
        assert_eq!(
            ban_from_doc(&d).map(|b| b.until_ms),
            Ok(Some(1_893_456_000_000))
        );
        assert!(filter_from_doc(&doc! { "pattern": "x", "action": "REJECT" }).is_ok());
        assert!(filter_from_doc(&doc! { "pattern": "x", "action": "drop" }).is_err());
        assert!(user_from_doc(&doc! { "_id": "a", "name": 5 }).is_err());
        assert!(room_from_doc(&doc! { "_id": "r", "port": 70000 }).is_err());
        assert!(room_from_doc(&doc! { "_id": "r", "port": -1 }).is_err());
        assert!(
            message_from_doc(&doc! { "room": "r", "seq": 1.5, "user_id": "u", "text": "t" })
                .is_err()
        );
    }

    #[test]
    fn store_docs_refuse_unrepresentable_integers() {
        let m = MessageRecord {
            room: "r".into(),
            epoch: 0,
            seq: u64::MAX,
            user_id: "u".into(),
            name: "n".into(),
            text: "t".into(),
            ts: 0,
            deleted: false,
        };
        assert!(matches!(
            message_to_doc(&m),
            Err(StoreError::Invalid { .. })
        ));
    }
}
