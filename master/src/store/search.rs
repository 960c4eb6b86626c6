//! Paged reads and text search for the room API's history routes (README,
//! "History and search"): a user's conversations newest first, one
//! conversation's or one room's stored messages by seq, optionally only
//! those whose text contains `q` (case-insensitive). Both backends implement
//! [`SearchStore`]; `search_suite.rs` runs against each.
//!
//! A search always names one conversation or one room, so it runs inside the
//! `(conversation, seq)` / `(room, seq)` range: MongoDB filters that index
//! range with an escaped `$regex` (option `i`); redb scans the range and
//! compares Unicode-lowercased text.

use async_trait::async_trait;
use chat_shared::direct::{ConversationSummary, DirectMessage};

use super::{MessageRecord, StoreError};

/// Where a page of a user's conversations starts: strictly after the
/// conversation `conversation` whose last message is at `ts` in the order
/// (last message's `ts` descending, then conversation id descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor {
    pub ts: u64,
    pub conversation: String,
}

impl ConversationCursor {
    /// The cursor after `c` (a conversation with a last message).
    pub fn after(c: &ConversationSummary) -> Option<Self> {
        c.last.as_ref().map(|m| Self {
            ts: m.ts,
            conversation: c.conversation.clone(),
        })
    }

    /// The opaque form an API hands out: `<ts>.<conversation id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts, self.conversation)
    }

    /// Reads [`Self::encode`]'s form; `None` when it is not one.
    pub fn decode(s: &str) -> Option<Self> {
        let (ts, conversation) = s.split_once('.')?;
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) || conversation.is_empty() {
            return None;
        }
        let ts: u64 = ts.parse().ok()?;
        // Stored timestamps are BSON dates in MongoDB (i64 ms).
        i64::try_from(ts).ok()?;
        Some(Self {
            ts,
            conversation: conversation.to_owned(),
        })
    }

    /// Whether a conversation whose last message is at `ts` comes after the
    /// cursor in the listing order.
    pub fn precedes(&self, ts: u64, conversation: &str) -> bool {
        ts < self.ts || (ts == self.ts && conversation < self.conversation.as_str())
    }
}

/// A text search: the needle as given and Unicode-lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    pub raw: String,
    lower: String,
}

impl TextQuery {
    pub fn new(q: &str) -> Self {
        Self {
            raw: q.to_owned(),
            lower: q.to_lowercase(),
        }
    }

    /// Case-insensitive containment (what redb does; MongoDB's `i` regex
    /// gives the same answers for text without special case mappings).
    pub fn matches(&self, text: &str) -> bool {
        text.to_lowercase().contains(&self.lower)
    }

    /// The needle as a regular expression matching it literally: every
    /// ASCII character that is not a letter, a digit or `_` is escaped with
    /// a backslash (literal in PCRE and in the regex dialects of wire-
    /// compatible servers); `\Q…\E` is not used, since not every server
    /// knows it.
    pub fn regex(&self) -> String {
        let mut out = String::with_capacity(self.raw.len() * 2);
        for c in self.raw.chars() {
            if c.is_ascii() && !c.is_ascii_alphanumeric() && c != '_' {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
}

/// Paged reads of stored history, optionally filtered by text.
#[async_trait]
pub trait SearchStore: Send + Sync {
    /// `user`'s conversations with a message, newest last message first,
    /// starting after `after`, at most `limit` (with their unread counts).
    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&ConversationCursor>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError>;

    /// The newest `limit` messages of `conversation` with `seq < before`
    /// (and text matching `q` when given), oldest first.
    async fn dm_page(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
        q: Option<&TextQuery>,
    ) -> Result<Vec<DirectMessage>, StoreError>;

    /// The newest `limit` messages of `room` with `seq < before`, oldest
    /// first. Without `q`, deleted messages are included (flagged, as in
    /// [`super::Store::history`]); with `q`, only messages not deleted whose
    /// text matches.
    async fn room_page(
        &self,
        room: &str,
        before: u64,
        limit: u32,
        q: Option<&TextQuery>,
    ) -> Result<Vec<MessageRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = ConversationCursor {
            ts: 1_764_750_000_000,
            conversation: "a.b:c%3Ad".into(),
        };
        assert_eq!(ConversationCursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            ".",
            "12",
            "12.",
            ".a:b",
            "x1.a:b",
            "-1.a:b",
            "+1.a:b",
            "99999999999999999999.a:b",
            "9223372036854775808.a:b",
        ] {
            assert_eq!(ConversationCursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_regex_is_literal() {
        assert_eq!(TextQuery::new(".*").regex(), r"\.\*");
        assert_eq!(TextQuery::new("a(b)[c]{d}").regex(), r"a\(b\)\[c\]\{d\}");
        assert_eq!(TextQuery::new(r"\d+|^$?").regex(), r"\\d\+\|\^\$\?");
        assert_eq!(TextQuery::new("é x_1").regex(), r"é\ x_1");
    }

    #[test]
    fn matching_ignores_case_in_unicode() {
        let q = TextQuery::new("ÉCOLE");
        assert!(q.matches("la petite école"));
        assert!(!q.matches("ecole"));
        assert!(TextQuery::new(".*").matches("a.*b"));
        assert!(!TextQuery::new(".*").matches("anything"));
    }
}
