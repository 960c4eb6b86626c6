//! The writer's fair queue: one FIFO per room, served round-robin with a cap
//! per room and per batch, so that a busy room's backlog never delays a quiet
//! room's next batch by more than one batch.

use std::collections::{HashMap, VecDeque};

use chat_shared::ipc::StoredMessage;

/// What waits for the store, in a room's order.
#[derive(Debug)]
enum Item {
    Message(StoredMessage),
    /// A deletion of `seq`: applied after the messages queued before it.
    Delete(u64),
}

/// What one store round writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Messages by room, each in queue order.
    pub messages: Vec<(String, Vec<StoredMessage>)>,
    /// Deletions by room, applied after `messages` are written.
    pub deletes: Vec<(String, u64)>,
}

impl Batch {
    pub fn message_count(&self) -> usize {
        self.messages.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.deletes.is_empty()
    }
}

/// Per-room queues and the round-robin order of rooms with something queued.
#[derive(Debug, Default)]
pub struct FairQueue {
    rooms: HashMap<String, VecDeque<Item>>,
    /// Rooms with a non-empty queue, next to serve first.
    turn: VecDeque<String>,
    messages: usize,
}

impl FairQueue {
    /// Messages queued (deletions not counted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }

    pub fn push_messages(&mut self, room: &str, messages: Vec<StoredMessage>) {
        self.messages += messages.len();
        self.queue(room)
            .extend(messages.into_iter().map(Item::Message));
    }

    pub fn push_delete(&mut self, room: &str, seq: u64) {
        self.queue(room).push_back(Item::Delete(seq));
    }

    fn queue(&mut self, room: &str) -> &mut VecDeque<Item> {
        if !self.rooms.contains_key(room) {
            self.turn.push_back(room.to_owned());
        }
        self.rooms.entry(room.to_owned()).or_default()
    }

    /// Takes at most `max` messages, at most `per_room` from each room, in
    /// turn; a room with more left goes to the back of the turn order.
    pub fn take(&mut self, max: usize, per_room: usize) -> Batch {
        let mut batch = Batch::default();
        let mut taken = 0;
        let mut visited = 0;
        let rooms_now = self.turn.len();
        while taken < max && visited < rooms_now {
            let Some(room) = self.turn.pop_front() else {
                break;
            };
            visited += 1;
            let Some(q) = self.rooms.get_mut(&room) else {
                continue;
            };
            let cap = per_room.min(max - taken);
            let mut mine = Vec::new();
            while let Some(item) = q.front() {
                match item {
                    Item::Message(_) if mine.len() >= cap => break,
                    _ => {}
                }
                match q.pop_front() {
                    Some(Item::Message(m)) => mine.push(m),
                    Some(Item::Delete(seq)) => batch.deletes.push((room.clone(), seq)),
                    None => break,
                }
            }
            taken += mine.len();
            if !mine.is_empty() {
                batch.messages.push((room.clone(), mine));
            }
            if q.is_empty() {
                self.rooms.remove(&room);
            } else {
                self.turn.push_back(room);
            }
        }
        self.messages -= taken;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredMessage> {
        seqs.map(|seq| StoredMessage {
            epoch: 1,
            seq,
            user_id: "u".into(),
            name: "U".into(),
            text: format!("m{seq}"),
            ts: seq,
            deleted: false,
        })
        .collect()
    }

    fn rooms_of(b: &Batch) -> Vec<(&str, usize)> {
        b.messages
            .iter()
            .map(|(r, m)| (r.as_str(), m.len()))
            .collect()
    }

    #[test]
    fn a_quiet_room_is_served_in_the_first_batch_behind_a_backlog() {
        let mut q = FairQueue::default();
        q.push_messages("busy", msgs(1..=5000));
        q.push_messages("quiet", msgs(1..=1));
        let first = q.take(1000, 200);
        assert_eq!(rooms_of(&first), [("busy", 200), ("quiet", 1)]);
        assert_eq!(q.len(), 4800);
        // The busy room then has every batch to itself, in order.
        let second = q.take(1000, 200);
        assert_eq!(rooms_of(&second), [("busy", 200)]);
        assert_eq!(second.messages[0].1[0].seq, 201);
    }

    #[test]
    fn rooms_take_turns_and_nothing_is_lost_or_reordered() {
        let mut q = FairQueue::default();
        q.push_messages("a", msgs(1..=10));
        q.push_messages("b", msgs(1..=10));
        q.push_messages("c", msgs(1..=10));
        let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
        let mut batches = 0;
        while !q.is_empty() {
            let b = q.take(5, 3);
            assert!(b.message_count() <= 5);
            for (room, m) in b.messages {
                assert!(m.len() <= 3);
                seen.entry(room)
                    .or_default()
                    .extend(m.iter().map(|m| m.seq));
            }
            batches += 1;
        }
        assert_eq!(batches, 6);
        for room in ["a", "b", "c"] {
            assert_eq!(seen[room], (1..=10).collect::<Vec<_>>(), "room {room}");
        }
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_delete_follows_the_messages_queued_before_it() {
        let mut q = FairQueue::default();
        q.push_messages("a", msgs(1..=3));
        q.push_delete("a", 2);
        q.push_messages("a", msgs(4..=4));
        let b = q.take(2, 2);
        assert_eq!(rooms_of(&b), [("a", 2)]);
        assert!(b.deletes.is_empty(), "message 3 is not written yet");
        let b = q.take(10, 10);
        assert_eq!(b.deletes, [("a".to_owned(), 2)]);
        assert_eq!(b.messages[0].1.len(), 2);
    }
}
