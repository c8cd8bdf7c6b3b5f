//! The Redis Stream between the batchers (producers, one per replica) and the shippers
//! (one consumer group; any replica may run a consumer). One stream entry is one batch:
//! field `b`, a JSON array of entries.

use std::time::Duration;

use redis::Value;

use crate::config::RedisConfig;
use crate::redis_conn::{must_reconnect, RedisConnection, RedisConnector};

/// Longest wait for a connection or a command (a blocking read adds its block time).
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a shipper's read blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(1000);
/// Stream entries (batches) taken per read.
const READ_COUNT: usize = 16;

/// The stream key: `{<prefix>:<stream>}` — the whole name is the hash tag, so in a Redis
/// Cluster it lives in one slot (every command here names only this key).
pub fn stream_key(prefix: &str, stream: &str) -> String {
    format!("{{{prefix}:{stream}}}")
}

/// One connection, made on first use and dropped after any error.
pub struct Conn {
    connector: RedisConnector,
    conn: Option<RedisConnection>,
}

impl Conn {
    pub fn new(cfg: &RedisConfig) -> Result<Conn, String> {
        Ok(Conn {
            connector: RedisConnector::new(cfg).map_err(|e| e.to_string())?,
            conn: None,
        })
    }

    async fn get(&mut self) -> Result<RedisConnection, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        // Replies may take a blocking read's block time on top of the usual limit.
        let c = tokio::time::timeout(OP_TIMEOUT, self.connector.connect(OP_TIMEOUT + BLOCK))
            .await
            .map_err(|_| "redis connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Run `cmd` within `OP_TIMEOUT + extra`; any failure forgets the connection.
    pub async fn run(&mut self, cmd: &redis::Cmd, extra: Duration) -> Result<Value, String> {
        let mut c = self.get().await?;
        match tokio::time::timeout(OP_TIMEOUT + extra, cmd.query_async::<Value>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // A server reply error (NOGROUP, BUSYGROUP) leaves the connection usable;
                // READONLY (a demoted master after a failover) does not.
                if must_reconnect(&e) {
                    self.conn = None;
                }
                Err(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                Err("redis timed out".into())
            }
        }
    }
}

/// `XADD key MAXLEN ~ maxlen * b payload`; an answer that is not an entry id is an error.
pub async fn add(conn: &mut Conn, key: &str, maxlen: u64, payload: &[u8]) -> Result<(), String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg("b")
        .arg(payload);
    let reply = conn.run(&cmd, Duration::ZERO).await?;
    text(&reply)
        .map(|_| ())
        .ok_or_else(|| format!("XADD answered {reply:?}, not an entry id"))
}

/// Create the group (reading from the start of the stream) unless it exists.
pub async fn ensure_group(conn: &mut Conn, key: &str, group: &str) -> Result<(), String> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM");
    match conn.run(&cmd, Duration::ZERO).await {
        Ok(_) => Ok(()),
        Err(e) if e.contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// A stream entry: id and the batch payload (`None` when the entry has no `b` field).
pub type StreamEntry = (String, Option<Vec<u8>>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[[id, [field, value, …]], …]` → entries (the payloads moved out of the reply, not copied).
fn entries(v: Value) -> Vec<StreamEntry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let mut pair = pair.into_iter();
        let (Some(id), fields) = (pair.next().as_ref().and_then(text), pair.next()) else {
            continue;
        };
        let mut payload = None;
        if let Some(Value::Array(kv)) = fields {
            let mut kv = kv.into_iter();
            while let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
                    if k == b"b" {
                        payload = Some(v);
                    }
                }
            }
        }
        out.push((id, payload));
    }
    out
}

/// `XREADGROUP … STREAMS key <from>`: `0` re-reads this consumer's own pending entries,
/// `>` waits (up to `BLOCK`) for new ones.
pub async fn read_group(
    conn: &mut Conn,
    key: &str,
    group: &str,
    consumer: &str,
    new: bool,
) -> Result<Vec<StreamEntry>, String> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(READ_COUNT);
    if new {
        cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(key).arg(if new { ">" } else { "0" });
    let extra = if new { BLOCK } else { Duration::ZERO };
    let v = conn.run(&cmd, extra).await?;
    // [[key, entries]] (RESP2), or nil when the block timed out.
    let Value::Array(streams) = v else {
        return Ok(Vec::new());
    };
    Ok(streams
        .into_iter()
        .filter_map(|s| match s {
            Value::Array(kv) => kv.into_iter().nth(1).map(entries),
            _ => None,
        })
        .flatten()
        .collect())
}

/// `XAUTOCLAIM key group consumer min_idle 0-0 COUNT n`: entries another consumer left
/// pending for longer than `min_idle` become this consumer's.
pub async fn autoclaim(
    conn: &mut Conn,
    key: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
) -> Result<Vec<StreamEntry>, String> {
    let mut cmd = redis::cmd("XAUTOCLAIM");
    cmd.arg(key)
        .arg(group)
        .arg(consumer)
        .arg(min_idle.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(READ_COUNT);
    let v = conn.run(&cmd, Duration::ZERO).await?;
    match v {
        Value::Array(parts) => Ok(parts.into_iter().nth(1).map(entries).unwrap_or_default()),
        _ => Ok(Vec::new()),
    }
}

/// `XACK key group id…`
pub async fn ack(conn: &mut Conn, key: &str, group: &str, ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("XACK");
    cmd.arg(key).arg(group).arg(ids);
    conn.run(&cmd, Duration::ZERO).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_one_hash_tag() {
        assert_eq!(stream_key("gw", "request-logs"), "{gw:request-logs}");
    }

    #[test]
    fn parses_entries() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"[]".to_vec()),
            ]),
        ])]);
        assert_eq!(entries(v), vec![("1-0".to_string(), Some(b"[]".to_vec()))]);
    }
}
