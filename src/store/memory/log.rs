//! `EventLog` in memory: the durable events after a seq, for `since`
//! resumes, read from the room's capped log after dropping what expired.

use async_trait::async_trait;

use super::{MemoryStore, trim_expired};
use crate::error::StoreResult;
use crate::events::{EventLog, Presence, RawReplay};

#[async_trait]
impl EventLog for MemoryStore {
    async fn envelopes_since(&self, room: &str, since: u64) -> StoreResult<RawReplay> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(RawReplay {
                envelopes: Vec::new(),
                last_seq: 0,
                complete: true,
            });
        };
        trim_expired(rs, self.now());
        let envelopes: Vec<Vec<u8>> = rs
            .events
            .iter()
            .filter(|(seq, _)| *seq > since)
            .map(|(_, env)| env.clone())
            .collect();
        let last_seq = rs.room.last_seq;
        let first = rs.events.iter().map(|(s, _)| *s).find(|s| *s > since);
        let complete = since >= last_seq || first == Some(since + 1);
        Ok(RawReplay {
            envelopes,
            last_seq,
            complete,
        })
    }

    async fn presence(&self, room: &str, users: &[String]) -> StoreResult<Presence> {
        let now = self.now();
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(Presence {
                exists: false,
                gone: vec![Some(None); users.len()],
            });
        };
        let gone = users
            .iter()
            .map(|u| (!rs.members.contains_key(u)).then(|| rs.moderation.ban(u, now).cloned()))
            .collect();
        Ok(Presence { exists: true, gone })
    }
}
