//! Lifecycle events (`atoll events`): what happened to containers, images and networks, kept in
//! memory (the last [`KEEP`]) for `--since` and broadcast live to followers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for replay.
pub const KEEP: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// Nanoseconds since the Unix epoch (for ordering and `--since`).
    pub time_nano: i128,
    /// `container`, `image` or `network`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `create`, `start`, `die`, `stop`, `kill`, `restart`, `destroy`, `health_status`, `oom`,
    /// `pull`, `delete`, `connect`, `disconnect`…
    pub action: String,
    /// The container's, image's or network's ID.
    pub id: String,
    /// Name, image, exit code, health status, network…
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    pub fn new(kind: &str, action: &str, id: &str, attributes: &[(&str, String)]) -> Self {
        let now = time::OffsetDateTime::now_utc();
        Self {
            time: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            time_nano: now.unix_timestamp_nanos(),
            kind: kind.to_owned(),
            action: action.to_owned(),
            id: id.to_owned(),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        }
    }

    /// Whether the event passes every filter (`type=`, `event=`, `container=`, `image=`,
    /// `network=`, `label`-less docker style; values of one key are alternatives).
    pub fn matches(&self, filters: &BTreeMap<String, Vec<String>>) -> bool {
        filters.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "type" => self.kind == *v,
                "event" | "action" => self.action == *v,
                "container" | "image" | "network" => {
                    self.kind == *k && (self.id.starts_with(v.as_str()) || self.attributes.get("name") == Some(v))
                }
                other => self.attributes.get(other) == Some(v),
            })
        })
    }
}

/// The event log of one daemon.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(1024).0, recent: Mutex::new(VecDeque::with_capacity(KEEP)) }
    }
}

impl EventBus {
    pub fn emit(&self, e: Event) {
        tracing::debug!(kind = %e.kind, action = %e.action, id = %e.id, "event");
        let mut recent = self.recent.lock().unwrap();
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(e.clone());
        // Sent under the lock, so a subscriber that took the backlog under it misses nothing.
        let _ = self.tx.send(e);
    }

    /// The kept events at or after `since_nano`, and a receiver for the ones after them.
    pub fn subscribe(&self, since_nano: Option<i128>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap();
        let backlog = match since_nano {
            Some(t) => recent.iter().filter(|e| e.time_nano >= t).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let e = Event::new("container", "die", "abcdef", &[("name", "web".into()), ("exitCode", "3".into())]);
        let f = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry((*k).into()).or_default().push((*v).into());
            }
            e.matches(&m)
        };
        assert!(f(&[]));
        assert!(f(&[("type", "container"), ("event", "die")]));
        assert!(f(&[("event", "start"), ("event", "die")]));
        assert!(f(&[("container", "web")]) && f(&[("container", "abc")]));
        assert!(!f(&[("container", "db")]) && !f(&[("image", "web")]) && !f(&[("event", "start")]));
        assert!(f(&[("exitCode", "3")]));
    }

    #[tokio::test]
    async fn backlog_then_live_without_gaps() {
        let bus = EventBus::default();
        bus.emit(Event::new("container", "create", "a", &[]));
        let t = bus.recent.lock().unwrap()[0].time_nano;
        let (backlog, mut rx) = bus.subscribe(Some(t));
        bus.emit(Event::new("container", "start", "a", &[]));
        assert_eq!(backlog.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["create"]);
        assert_eq!(rx.recv().await.unwrap().action, "start");
        let (none, _) = bus.subscribe(None);
        assert!(none.is_empty());
    }
}
