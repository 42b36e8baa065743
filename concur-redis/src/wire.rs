//! What travels through the streams, and how replies from the broker are
//! read. Everything read here may come from anyone with access to the
//! broker: it is checked field by field and never trusted to be well
//! formed (values inside are decoded by core's codec, with its limits).
//!
//! A task entry (stream `tasks`) has the fields `v` (protocol version),
//! `build` (the submitter's build id), `name`, `pool`, `id`, `kind` (`one`
//! or `batch`), `retries`, optionally `timeout` (milliseconds), and `body`
//! (the encoded task, or for a batch the encoded list of encoded tasks).
//! A result entry (a pool's `results` stream) has `id`, `k` (`ok`, `err`,
//! `msg`, `ready`) and `b` (the output, an encoded `TaskError`, a message,
//! or nothing).

use std::fmt;
use std::time::Duration;

use redis::Value;

/// The version of this layout. Workers refuse entries of another version.
pub(crate) const PROTOCOL: u32 = 1;

/// The registry name of function tasks (`submit_fn`). They carry a code
/// address, which a worker must never take from a broker anyone with
/// access can write to: refused at submit and in the worker.
pub(crate) use concur_core::FN_TASK_NAME;

/// One stream entry as read: its id and its fields (`None` when the entry
/// was deleted after it was delivered).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Entry {
    /// The value of field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, name: &'static str) -> Result<&str, Garbage> {
        let v = self.get(name).ok_or(Garbage::Missing(name))?;
        std::str::from_utf8(v).map_err(|_| Garbage::Bad(name))
    }

    fn number(&self, name: &'static str) -> Result<u64, Garbage> {
        self.text(name)?.parse().map_err(|_| Garbage::Bad(name))
    }
}

/// Why an entry cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Garbage {
    Missing(&'static str),
    Bad(&'static str),
    Deleted,
}

impl fmt::Display for Garbage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Garbage::Missing(field) => write!(f, "the entry has no `{field}` field"),
            Garbage::Bad(field) => write!(f, "the entry's `{field}` field is malformed"),
            Garbage::Deleted => f.write_str("the entry was deleted"),
        }
    }
}

impl std::error::Error for Garbage {}

/// Where a task's result goes: its pool and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub(crate) pool: String,
    pub(crate) task: u64,
}

/// A pool id: what the submitter chose (hex), bounded so that a key built
/// from it stays short and plain.
fn valid_pool(pool: &str) -> bool {
    !pool.is_empty()
        && pool.len() <= 64
        && pool
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The route of a task entry, when at least that much of it is readable.
pub(crate) fn route(e: &Entry) -> Result<Route, Garbage> {
    let pool = e.text("pool")?;
    if !valid_pool(pool) {
        return Err(Garbage::Bad("pool"));
    }
    Ok(Route {
        pool: pool.to_owned(),
        task: e.number("id")?,
    })
}

/// A task entry, read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskEntry {
    pub(crate) route: Route,
    pub(crate) version: u64,
    pub(crate) build: Vec<u8>,
    pub(crate) name: String,
    pub(crate) batch: bool,
    pub(crate) retries: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl TaskEntry {
    /// Reads a task entry, field by field.
    pub(crate) fn parse(e: &Entry) -> Result<Self, Garbage> {
        if e.fields.is_none() {
            return Err(Garbage::Deleted);
        }
        let route = route(e)?;
        let batch = match e.text("kind")? {
            "one" => false,
            "batch" => true,
            _ => return Err(Garbage::Bad("kind")),
        };
        let timeout = match e.get("timeout") {
            None => None,
            Some(_) => Some(Duration::from_millis(e.number("timeout")?)),
        };
        Ok(Self {
            route,
            version: e.number("v")?,
            build: e.get("build").ok_or(Garbage::Missing("build"))?.to_vec(),
            name: e.text("name")?.to_owned(),
            batch,
            retries: u32::try_from(e.number("retries")?).map_err(|_| Garbage::Bad("retries"))?,
            timeout,
            body: e.get("body").ok_or(Garbage::Missing("body"))?.to_vec(),
        })
    }
}

/// What a result entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultKind {
    /// The task's output, encoded (`b`).
    Ok,
    /// The task failed: an encoded `TaskError` (`b`).
    Err,
    /// A message from the running task to its caller (`b`).
    Msg,
    /// A local worker (incarnation `id`) is ready.
    Ready,
}

impl ResultKind {
    pub(crate) fn tag(self) -> &'static str {
        match self {
            ResultKind::Ok => "ok",
            ResultKind::Err => "err",
            ResultKind::Msg => "msg",
            ResultKind::Ready => "ready",
        }
    }

    fn from_tag(t: &[u8]) -> Option<Self> {
        Some(match t {
            b"ok" => ResultKind::Ok,
            b"err" => ResultKind::Err,
            b"msg" => ResultKind::Msg,
            b"ready" => ResultKind::Ready,
            _ => return None,
        })
    }
}

/// A result entry, read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResultEntry {
    pub(crate) task: u64,
    pub(crate) kind: ResultKind,
    pub(crate) body: Vec<u8>,
}

impl ResultEntry {
    /// Reads a result entry; its body moves out of the entry (a result or
    /// message of any size is not copied again on its way to the handle).
    pub(crate) fn parse(mut e: Entry) -> Result<Self, Garbage> {
        let task = e.number("id")?;
        let kind = ResultKind::from_tag(e.get("k").ok_or(Garbage::Missing("k"))?)
            .ok_or(Garbage::Bad("k"))?;
        let body = e
            .fields
            .iter_mut()
            .flatten()
            .find(|(k, _)| k == b"b")
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default();
        Ok(Self { task, kind, body })
    }
}

// ------------------------------------------------------- broker replies --

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// Text of a reply (an id, a count as text).
pub(crate) fn text(v: &Value) -> Option<String> {
    String::from_utf8(bytes(v)?).ok()
}

/// A number in a reply.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array reply (a map reply is flattened key, value).
pub(crate) fn items(v: &Value) -> Option<Vec<&Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a.iter().collect()),
        Value::Map(m) => Some(m.iter().flat_map(|(k, v)| [k, v]).collect()),
        _ => None,
    }
}

/// One entry of a range reply: `[id, [field, value, ...] | nil]`.
fn entry(v: &Value) -> Option<Entry> {
    let parts = items(v)?;
    let id = text(parts.first()?)?;
    let fields = match parts.get(1) {
        None | Some(Value::Nil) => None,
        Some(list) => {
            let flat = items(list)?;
            if flat.len() % 2 != 0 {
                return None;
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks(2) {
                out.push((bytes(pair[0])?, bytes(pair[1])?));
            }
            Some(out)
        }
    };
    Some(Entry { id, fields })
}

/// The entries of a range reply (`XRANGE`, one stream of `XREAD`, the
/// claimed list of `XAUTOCLAIM`). Entries that cannot be read at all
/// (no id) are skipped.
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .map(|list| list.into_iter().filter_map(entry).collect())
        .unwrap_or_default()
}

/// The entries of an `XREAD`/`XREADGROUP` reply, all streams together
/// (nil, the reply when nothing came, is no entries).
pub(crate) fn read_reply(v: &Value) -> Vec<Entry> {
    let Some(streams) = items(v) else {
        return Vec::new();
    };
    // RESP2: [[key, entries], ...]; RESP3 maps flatten to key, entries, ...
    if matches!(v, Value::Map(_)) {
        return streams
            .chunks(2)
            .filter_map(|kv| kv.get(1))
            .flat_map(|e| entries(e))
            .collect();
    }
    streams
        .into_iter()
        .filter_map(|s| items(s)?.get(1).map(|e| entries(e)))
        .flatten()
        .collect()
}

/// An `XAUTOCLAIM` reply: the next cursor and the claimed entries (ids of
/// deleted entries, which the broker already dropped, are left out).
pub(crate) fn autoclaim_reply(v: &Value) -> (String, Vec<Entry>) {
    let parts = items(v).unwrap_or_default();
    let cursor = parts
        .first()
        .and_then(|c| text(c))
        .unwrap_or_else(|| "0-0".into());
    let claimed = parts.get(1).map(|e| entries(e)).unwrap_or_default();
    (cursor, claimed)
}

/// The delivery count in an `XPENDING key group id id 1` reply.
pub(crate) fn delivery_count(v: &Value) -> Option<u64> {
    let rows = items(v)?;
    let row = items(rows.first()?)?;
    u64::try_from(int(row.get(3)?)?).ok()
}

/// The ids in an `XPENDING key group - + n consumer` reply.
pub(crate) fn pending_ids(v: &Value) -> Vec<String> {
    items(v)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|row| text(items(row)?.first()?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn task_entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry {
            id: "1-0".into(),
            fields: Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_whole_task_entry_reads_back() {
        let e = task_entry(&[
            ("v", b"1"),
            ("build", b"gnu:x"),
            ("name", b"t::Add"),
            ("pool", b"ab12"),
            ("id", b"7"),
            ("kind", b"batch"),
            ("retries", b"2"),
            ("timeout", b"250"),
            ("body", &[0, 1, 2]),
        ]);
        let t = TaskEntry::parse(&e).unwrap();
        assert_eq!(
            t.route,
            Route {
                pool: "ab12".into(),
                task: 7
            }
        );
        assert!(t.batch);
        assert_eq!(t.timeout, Some(Duration::from_millis(250)));
        assert_eq!(t.body, vec![0, 1, 2]);
    }

    #[test]
    fn garbage_entries_say_what_is_wrong() {
        let e = task_entry(&[("pool", b"ab"), ("id", b"x")]);
        assert_eq!(TaskEntry::parse(&e), Err(Garbage::Bad("id")));
        let e = task_entry(&[("pool", b"../../etc"), ("id", b"1")]);
        assert_eq!(route(&e), Err(Garbage::Bad("pool")));
        let e = task_entry(&[("junk", b"1")]);
        assert_eq!(route(&e), Err(Garbage::Missing("pool")));
        let deleted = Entry {
            id: "1-0".into(),
            fields: None,
        };
        assert_eq!(TaskEntry::parse(&deleted), Err(Garbage::Deleted));
        let e = task_entry(&[("id", b"3"), ("k", b"??")]);
        assert_eq!(ResultEntry::parse(e), Err(Garbage::Bad("k")));
    }

    #[test]
    fn read_replies_of_any_shape_never_panic() {
        let good = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-1"),
                    Value::Array(vec![bulk(b"id"), bulk(b"4")]),
                ]),
                Value::Array(vec![bulk(b"1-2"), Value::Nil]),
                Value::Array(vec![bulk(b"1-3"), Value::Array(vec![bulk(b"odd")])]),
                Value::Int(5),
            ]),
        ])]);
        let got = read_reply(&good);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].get("id"), Some(&b"4"[..]));
        assert_eq!(got[1].fields, None);
        assert!(read_reply(&Value::Nil).is_empty());
        assert!(read_reply(&Value::Int(3)).is_empty());
        let (cursor, claimed) = autoclaim_reply(&Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![]),
            Value::Array(vec![bulk(b"1-1")]),
        ]));
        assert_eq!((cursor.as_str(), claimed.len()), ("0-0", 0));
    }
}
