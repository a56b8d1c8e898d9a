//! The scale-out backend: several server processes share presence, routing, mailbox and key
//! directory through one Redis server.
//!
//! Layout (every key starts with `dopus:`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `node:<node>` | string, 15 s TTL | liveness of a server process (refreshed every 5 s) |
//! | `bus:<node>` | pub/sub channel | frames for connections held by `<node>` |
//! | `pr:<user>` | hash | device → `status|node|conn` of connected devices |
//! | `ct:<user>` | set | the user's contact list, expiring a mailbox TTL after its last sync |
//! | `dev:<user>` | hash | device → last login (ms), the device registry |
//! | `mb:<user>:<device>` | sorted set | mailbox item ids, in order |
//! | `mbi:`, `mbx:`, `mbl:` + `<user>:<device>` | hash / sorted set / hash | item JSON, expiry, byte length |
//! | `mbb:<user>:<device>` | string | payload bytes queued |
//! | `mbf:<user>:<device>` | hash | item id → sending user |
//! | `mbs:<user>:<device>` | hash | `n:<sender>` / `b:<sender>` → items / payload bytes queued by that sender |
//! | `mbseq`, `mbdepth`, `mbidx` | string, string, set | id counter, total depth, non-empty mailboxes |
//! | `kd:<user>`, `kdf:<user>` | hash | device → certificate / fallback key JSON |
//! | `otk:<user>:<device>`, `otkid:<user>:<device>` | list, set | one-time keys, ids ever stored |
//!
//! Quota checks, acks and one-time-key claims are Lua scripts or single commands (`LPOP`), so
//! they are atomic across processes. Durability of the mailbox is Redis's: run it with
//! `appendonly yes` and `appendfsync always` for the same guarantee as the SQLite store.

use super::memory::deliver_local;
use super::{
    Backends, BoxFut, Bus, BusMessage, Claimed, Delivery, DeviceEntry, KeyDirectory, Mailbox,
    NewItem, PresenceStore, PushError, Quota, StoreError, StoredItem,
};
use crate::outbox::LocalConnections;
use dopus_proto::bundle::{
    BUNDLE_VERSION, ClaimedBundle, DeviceBundle, DeviceCertificate, SignedKey,
};
use dopus_proto::signaling::{DeliveryKind, ErrorCode, Sender, Status};
use dopus_types::{DeviceId, Timestamp, UserId};
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODE_TTL_SECS: u64 = 15;
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The mailbox keys every mailbox script gets first: KEYS[1..8] = mb mbi mbx mbl mbb depth mbf
/// mbs. `forget` drops one item and its accounting (per device and per sender).
const EXPIRE_FN: &str = r"
local function forget(id)
  local len = tonumber(redis.call('HGET', KEYS[4], id) or '0')
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('DECRBY', KEYS[5], len)
  redis.call('DECR', KEYS[6])
  local from = redis.call('HGET', KEYS[7], id)
  if from then
    redis.call('HDEL', KEYS[7], id)
    redis.call('HINCRBY', KEYS[8], 'n:' .. from, -1)
    redis.call('HINCRBY', KEYS[8], 'b:' .. from, -len)
  end
end
local function expire(now)
  local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, id in ipairs(ids) do
    forget(id)
  end
  return #ids
end
";

/// KEYS: mailbox keys, seq idx; ARGV: now max_items max_bytes len json expires member from
/// sender_max_items sender_max_bytes
const PUSH: &str = r"
expire(ARGV[1])
local count = redis.call('ZCARD', KEYS[1])
local bytes = tonumber(redis.call('GET', KEYS[5]) or '0')
local len = tonumber(ARGV[4])
if count + 1 > tonumber(ARGV[2]) or bytes + len > tonumber(ARGV[3]) then
  return -1
end
local from = ARGV[8]
local mine = tonumber(redis.call('HGET', KEYS[8], 'n:' .. from) or '0')
local mine_bytes = tonumber(redis.call('HGET', KEYS[8], 'b:' .. from) or '0')
if mine + 1 > tonumber(ARGV[9]) or mine_bytes + len > tonumber(ARGV[10]) then
  return -1
end
local id = redis.call('INCR', KEYS[9])
redis.call('ZADD', KEYS[1], id, id)
redis.call('HSET', KEYS[2], id, ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], id)
redis.call('HSET', KEYS[4], id, len)
redis.call('INCRBY', KEYS[5], len)
redis.call('INCR', KEYS[6])
redis.call('HSET', KEYS[7], id, from)
redis.call('HINCRBY', KEYS[8], 'n:' .. from, 1)
redis.call('HINCRBY', KEYS[8], 'b:' .. from, len)
redis.call('SADD', KEYS[10], ARGV[7])
return id
";

/// KEYS: mailbox keys; ARGV: now after limit
const FETCH: &str = r"
expire(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local item = redis.call('HGET', KEYS[2], id)
  if item then
    table.insert(out, id)
    table.insert(out, item)
  end
end
return out
";

/// KEYS: mailbox keys; ARGV: now
const COUNT: &str = r"
expire(ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

/// KEYS: mailbox keys; ARGV: ids…
const ACK: &str = r"
local removed = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZSCORE', KEYS[1], id) then
    forget(id)
    removed = removed + 1
  end
end
return removed
";

/// KEYS: kd kdf otk otkid; ARGV: device cert fallback key_id1 key_json1 …
const PUBLISH: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and old ~= ARGV[2] then
  redis.call('DEL', KEYS[3])
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local i = 4
while i < #ARGV do
  if redis.call('SADD', KEYS[4], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[i + 1])
  end
  i = i + 2
end
return redis.call('LLEN', KEYS[3])
";

/// KEYS: pr; ARGV: device value → previous value or false
const ATTACH: &str = r"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return prev
";

/// KEYS: pr; ARGV: device node conn new_status → 1 if changed
const SET_STATUS: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local s, n, c = string.match(v, '^([^|]*)|([^|]*)|([^|]*)$')
if n ~= ARGV[2] or c ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4] .. '|' .. n .. '|' .. c)
return 1
";

/// KEYS: pr; ARGV: device node conn → {removed, left}
const DETACH: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
local removed = 0
if v then
  local s, n, c = string.match(v, '^([^|]*)|([^|]*)|([^|]*)$')
  if n == ARGV[2] and c == ARGV[3] then
    redis.call('HDEL', KEYS[1], ARGV[1])
    removed = 1
  end
end
return {removed, redis.call('HLEN', KEYS[1])}
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{EXPIRE_FN}\n{body}"))
}

struct Scripts {
    push: redis::Script,
    fetch: redis::Script,
    count: redis::Script,
    ack: redis::Script,
    publish: redis::Script,
    attach: redis::Script,
    set_status: redis::Script,
    detach: redis::Script,
}

/// The Redis implementation of all four backend traits.
#[derive(Clone)]
pub struct RedisBackend {
    con: ConnectionManager,
    node: Arc<str>,
    local: Arc<LocalConnections>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("node", &self.node)
            .finish()
    }
}

/// A mailbox item as stored in Redis.
#[derive(Serialize, Deserialize)]
struct ItemRecord {
    kind: DeliveryKind,
    from: Sender,
    payload: String,
    sent_at: Timestamp,
    expires_at: Timestamp,
}

/// A message on a node's bus channel.
#[derive(Serialize, Deserialize)]
struct BusRecord {
    user: UserId,
    device: DeviceId,
    conn: u64,
    #[serde(default)]
    frame: Option<String>,
    #[serde(default)]
    poke: bool,
    #[serde(default)]
    close: Option<ErrorCode>,
}

fn k(parts: &[&str]) -> String {
    let mut s = String::from("dopus");
    for p in parts {
        s.push(':');
        s.push_str(p);
    }
    s
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

struct MailboxKeys {
    mb: String,
    mbi: String,
    mbx: String,
    mbl: String,
    mbb: String,
    mbf: String,
    mbs: String,
}

impl MailboxKeys {
    /// The keys every mailbox script takes first (see `EXPIRE_FN`).
    fn add_to(self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.key(self.mb)
            .key(self.mbi)
            .key(self.mbx)
            .key(self.mbl)
            .key(self.mbb)
            .key(k(&["mbdepth"]))
            .key(self.mbf)
            .key(self.mbs);
    }
}

fn mailbox_keys(user: &str, device: &str) -> MailboxKeys {
    let id = format!("{user}:{device}");
    MailboxKeys {
        mb: k(&["mb", &id]),
        mbi: k(&["mbi", &id]),
        mbx: k(&["mbx", &id]),
        mbl: k(&["mbl", &id]),
        mbb: k(&["mbb", &id]),
        mbf: k(&["mbf", &id]),
        mbs: k(&["mbs", &id]),
    }
}

fn encode_entry(e: &DeviceEntry) -> String {
    format!("{}|{}|{}", e.status.as_str(), e.node, e.conn)
}

fn decode_entry(v: &str) -> Option<DeviceEntry> {
    let mut it = v.splitn(3, '|');
    let status = Status::from_name(it.next()?)?;
    let node: Arc<str> = it.next()?.into();
    let conn = it.next()?.parse().ok()?;
    Some(DeviceEntry { status, node, conn })
}

impl RedisBackend {
    /// Connects, starts the liveness heartbeat and the bus subscriber for `node`.
    pub(crate) async fn connect(
        url: &str,
        node: Arc<str>,
        local: Arc<LocalConnections>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let con = client.get_connection_manager().await?;
        let backend = Self {
            con,
            node: node.clone(),
            local: local.clone(),
            scripts: Arc::new(Scripts {
                push: script(PUSH),
                fetch: script(FETCH),
                count: script(COUNT),
                ack: script(ACK),
                publish: script(PUBLISH),
                attach: script(ATTACH),
                set_status: script(SET_STATUS),
                detach: script(DETACH),
            }),
        };
        backend.heartbeat().await?;
        // Subscribe before accepting connections so no frame for this node is missed.
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(k(&["bus", &node])).await?;
        let hb = backend.clone();
        let hb_stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = hb_stop.cancelled() => {
                        let mut con = hb.con.clone();
                        let _: Result<(), _> = con.del(k(&["node", &hb.node])).await;
                        return;
                    }
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        if let Err(e) = hb.heartbeat().await {
                            tracing::warn!(error = %e, "redis heartbeat failed");
                        }
                    }
                }
            }
        });
        tasks.spawn(subscriber(client, pubsub, node, local, shutdown));
        Ok(backend)
    }

    /// The backend as the four trait objects.
    pub fn backends(self) -> Backends {
        let me = Arc::new(self);
        Backends {
            directory: me.clone(),
            mailbox: me.clone(),
            presence: me.clone(),
            bus: me,
        }
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: () = con
            .set_ex(k(&["node", &self.node]), "1", NODE_TTL_SECS)
            .await?;
        Ok(())
    }

    async fn alive_nodes(&self, nodes: &[Arc<str>]) -> Result<HashSet<Arc<str>>, StoreError> {
        let mut alive = HashSet::new();
        let others: Vec<&Arc<str>> = nodes.iter().filter(|n| **n != self.node).collect();
        if nodes.contains(&self.node) {
            alive.insert(self.node.clone());
        }
        if others.is_empty() {
            return Ok(alive);
        }
        let keys: Vec<String> = others.iter().map(|n| k(&["node", n])).collect();
        let mut con = self.con.clone();
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut con).await?;
        for (n, v) in others.into_iter().zip(vals) {
            if v.is_some() {
                alive.insert(n.clone());
            }
        }
        Ok(alive)
    }

    fn mailbox_invocation<'a>(
        &self,
        script: &'a redis::Script,
        user: &UserId,
        device: &DeviceId,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        mailbox_keys(&user.to_string(), device.as_str()).add_to(&mut inv);
        inv
    }
}

async fn subscriber(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    node: Arc<str>,
    local: Arc<LocalConnections>,
    shutdown: CancellationToken,
) {
    let channel = k(&["bus", &node]);
    loop {
        {
            let mut stream = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(msg) = msg else { break };
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let Ok(rec) = serde_json::from_str::<BusRecord>(&text) else {
                    continue;
                };
                let m = if let Some(frame) = rec.frame {
                    BusMessage::Frame(frame.into())
                } else if let Some(code) = rec.close {
                    BusMessage::Close(code)
                } else if rec.poke {
                    BusMessage::Poke
                } else {
                    continue;
                };
                deliver_local(&local, rec.conn, &rec.user, &rec.device, m);
            }
        }
        tracing::warn!("redis subscription lost; reconnecting");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            match client.get_async_pubsub().await {
                Ok(mut p) => {
                    if p.subscribe(&channel).await.is_ok() {
                        pubsub = p;
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "redis resubscribe failed"),
            }
        }
    }
}

impl KeyDirectory for RedisBackend {
    fn publish(
        &self,
        bundle: DeviceBundle,
        _now: Timestamp,
    ) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let user = bundle.certificate.user_id.to_string();
            let device = bundle.certificate.device_id.to_string();
            let cert = serde_json::to_string(&bundle.certificate).map_err(corrupt)?;
            let fallback = serde_json::to_string(&bundle.fallback_key).map_err(corrupt)?;
            let id = format!("{user}:{device}");
            let mut inv = self.scripts.publish.prepare_invoke();
            inv.key(k(&["kd", &user]))
                .key(k(&["kdf", &user]))
                .key(k(&["otk", &id]))
                .key(k(&["otkid", &id]))
                .arg(&device)
                .arg(cert)
                .arg(fallback);
            for key in &bundle.one_time_keys {
                inv.arg(&key.key_id)
                    .arg(serde_json::to_string(key).map_err(corrupt)?);
            }
            let mut con = self.con.clone();
            let n: u64 = inv.invoke_async(&mut con).await?;
            Ok(n)
        })
    }

    fn claim(&self, user: UserId) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>> {
        Box::pin(async move {
            let u = user.to_string();
            let mut con = self.con.clone();
            let certs: HashMap<String, String> = con.hgetall(k(&["kd", &u])).await?;
            let fallbacks: HashMap<String, String> = con.hgetall(k(&["kdf", &u])).await?;
            let mut devices: Vec<(String, String)> = certs.into_iter().collect();
            devices.sort();
            let mut out = Vec::with_capacity(devices.len());
            for (device, cert) in devices {
                let Some(fallback) = fallbacks.get(&device) else {
                    continue;
                };
                let certificate: DeviceCertificate =
                    serde_json::from_str(&cert).map_err(corrupt)?;
                let fallback_key: SignedKey = serde_json::from_str(fallback).map_err(corrupt)?;
                let list = k(&["otk", &format!("{u}:{device}")]);
                // LPOP is atomic: each one-time key leaves the list exactly once.
                let otk: Option<String> = con.lpop(&list, None).await?;
                let one_time_key = match otk {
                    Some(json) => Some(serde_json::from_str::<SignedKey>(&json).map_err(corrupt)?),
                    None => None,
                };
                let remaining: u64 = con.llen(&list).await?;
                out.push(Claimed {
                    bundle: ClaimedBundle {
                        version: BUNDLE_VERSION,
                        certificate,
                        fallback_key,
                        one_time_key,
                    },
                    remaining,
                });
            }
            Ok(out)
        })
    }

    fn one_time_key_count(
        &self,
        user: UserId,
        device: DeviceId,
    ) -> BoxFut<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let u = user.to_string();
            let mut con = self.con.clone();
            let has: bool = con.hexists(k(&["kd", &u]), device.as_str()).await?;
            if !has {
                return Ok(None);
            }
            let n: u64 = con.llen(k(&["otk", &format!("{u}:{device}")])).await?;
            Ok(Some(n))
        })
    }
}

impl Mailbox for RedisBackend {
    fn register_device(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let _: () = con
                .hset(
                    k(&["dev", &user.to_string()]),
                    device.as_str(),
                    now.as_millis(),
                )
                .await?;
            Ok(())
        })
    }

    fn known_devices(&self, user: UserId) -> BoxFut<'_, Result<Vec<DeviceId>, StoreError>> {
        Box::pin(async move {
            let u = user.to_string();
            let mut con = self.con.clone();
            let mut names: Vec<String> = con.hkeys(k(&["dev", &u])).await?;
            let published: Vec<String> = con.hkeys(k(&["kd", &u])).await?;
            names.extend(published);
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|d| d.parse::<DeviceId>().map_err(corrupt))
                .collect()
        })
    }

    fn push(
        &self,
        user: UserId,
        device: DeviceId,
        item: NewItem,
        quota: Quota,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, PushError>> {
        Box::pin(async move {
            let len = item.payload.len() as u64;
            let expires = item.expires_at.as_millis();
            let from = item.from.user.to_string();
            let record = ItemRecord {
                kind: item.kind,
                from: item.from,
                payload: item.payload,
                sent_at: item.sent_at,
                expires_at: item.expires_at,
            };
            let json = serde_json::to_string(&record).map_err(corrupt)?;
            let mut inv = self.mailbox_invocation(&self.scripts.push, &user, &device);
            inv.key(k(&["mbseq"]))
                .key(k(&["mbidx"]))
                .arg(now.as_millis())
                .arg(quota.max_items)
                .arg(quota.max_bytes)
                .arg(len)
                .arg(json)
                .arg(expires)
                .arg(format!("{user}|{device}"))
                .arg(from)
                .arg(quota.sender_max_items)
                .arg(quota.sender_max_bytes);
            let mut con = self.con.clone();
            let id: i64 = inv
                .invoke_async(&mut con)
                .await
                .map_err(|e| PushError::Store(e.into()))?;
            u64::try_from(id).map_err(|_| PushError::Full)
        })
    }

    fn fetch(
        &self,
        user: UserId,
        device: DeviceId,
        after: u64,
        limit: usize,
        now: Timestamp,
    ) -> BoxFut<'_, Result<Vec<StoredItem>, StoreError>> {
        Box::pin(async move {
            let mut inv = self.mailbox_invocation(&self.scripts.fetch, &user, &device);
            inv.arg(now.as_millis()).arg(after).arg(limit);
            let mut con = self.con.clone();
            let flat: Vec<String> = inv.invoke_async(&mut con).await?;
            let mut out = Vec::with_capacity(flat.len() / 2);
            for pair in flat.chunks_exact(2) {
                let id: u64 = pair[0].parse().map_err(corrupt)?;
                // An item this version cannot read (such as one of the retired contact kinds)
                // is skipped rather than failing the page: it would otherwise block every later
                // item of the mailbox until it expires.
                let r: ItemRecord = match serde_json::from_str(&pair[1]) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable mailbox item");
                        continue;
                    }
                };
                out.push(StoredItem {
                    id,
                    item: NewItem {
                        kind: r.kind,
                        from: r.from,
                        payload: r.payload,
                        sent_at: r.sent_at,
                        expires_at: r.expires_at,
                    },
                });
            }
            Ok(out)
        })
    }

    fn count(
        &self,
        user: UserId,
        device: DeviceId,
        now: Timestamp,
    ) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut inv = self.mailbox_invocation(&self.scripts.count, &user, &device);
            inv.arg(now.as_millis());
            let mut con = self.con.clone();
            Ok(inv.invoke_async(&mut con).await?)
        })
    }

    fn ack(
        &self,
        user: UserId,
        device: DeviceId,
        ids: Vec<u64>,
    ) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(0);
            }
            let mut inv = self.mailbox_invocation(&self.scripts.ack, &user, &device);
            for id in ids {
                inv.arg(id);
            }
            let mut con = self.con.clone();
            Ok(inv.invoke_async(&mut con).await?)
        })
    }

    fn purge(&self, now: Timestamp, _device_ttl_ms: u64) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let before = self.depth().await?;
            let mut con = self.con.clone();
            let boxes: Vec<String> = con.smembers(k(&["mbidx"])).await?;
            for member in boxes {
                let Some((user, device)) = member.split_once('|') else {
                    continue;
                };
                let mut inv = self.scripts.count.prepare_invoke();
                mailbox_keys(user, device).add_to(&mut inv);
                inv.arg(now.as_millis());
                let left: u64 = inv.invoke_async(&mut con).await?;
                if left == 0 {
                    let _: () = con.srem(k(&["mbidx"]), &member).await?;
                }
            }
            // Acks from other processes may run concurrently, so this is an estimate.
            Ok(before.saturating_sub(self.depth().await?))
        })
    }

    fn depth(&self) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let n: Option<i64> = con.get(k(&["mbdepth"])).await?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
    }
}

impl PresenceStore for RedisBackend {
    fn attach(
        &self,
        user: UserId,
        device: DeviceId,
        entry: DeviceEntry,
    ) -> BoxFut<'_, Result<Option<DeviceEntry>, StoreError>> {
        Box::pin(async move {
            let mut inv = self.scripts.attach.prepare_invoke();
            inv.key(k(&["pr", &user.to_string()]))
                .arg(device.as_str())
                .arg(encode_entry(&entry));
            let mut con = self.con.clone();
            let prev: Option<String> = inv.invoke_async(&mut con).await?;
            Ok(prev.as_deref().and_then(decode_entry))
        })
    }

    fn set_status(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
        status: Status,
    ) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut inv = self.scripts.set_status.prepare_invoke();
            inv.key(k(&["pr", &user.to_string()]))
                .arg(device.as_str())
                .arg(&*node)
                .arg(conn)
                .arg(status.as_str());
            let mut con = self.con.clone();
            let changed: i64 = inv.invoke_async(&mut con).await?;
            Ok(changed == 1)
        })
    }

    fn detach(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        node: Arc<str>,
    ) -> BoxFut<'_, Result<(bool, usize), StoreError>> {
        Box::pin(async move {
            let mut inv = self.scripts.detach.prepare_invoke();
            inv.key(k(&["pr", &user.to_string()]))
                .arg(device.as_str())
                .arg(&*node)
                .arg(conn);
            let mut con = self.con.clone();
            let (removed, left): (i64, i64) = inv.invoke_async(&mut con).await?;
            Ok((removed == 1, usize::try_from(left).unwrap_or(0)))
        })
    }

    fn devices(
        &self,
        user: UserId,
    ) -> BoxFut<'_, Result<Vec<(DeviceId, DeviceEntry)>, StoreError>> {
        Box::pin(async move {
            let key = k(&["pr", &user.to_string()]);
            let mut con = self.con.clone();
            let raw: HashMap<String, String> = con.hgetall(&key).await?;
            let mut entries = Vec::with_capacity(raw.len());
            for (device, value) in raw {
                if let (Ok(d), Some(e)) = (device.parse::<DeviceId>(), decode_entry(&value)) {
                    entries.push((d, e));
                }
            }
            let nodes: Vec<Arc<str>> = entries.iter().map(|(_, e)| e.node.clone()).collect();
            let alive = self.alive_nodes(&nodes).await?;
            let mut live = Vec::with_capacity(entries.len());
            for (d, e) in entries {
                if alive.contains(&e.node) {
                    live.push((d, e));
                } else {
                    // A crashed process left this entry behind; drop it.
                    let _: Result<(), _> = con.hdel(&key, d.as_str()).await;
                }
            }
            live.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(live)
        })
    }

    fn set_contacts(
        &self,
        user: UserId,
        contacts: Vec<UserId>,
        _now: Timestamp,
        keep_ms: u64,
    ) -> BoxFut<'_, Result<Vec<UserId>, StoreError>> {
        Box::pin(async move {
            let key = k(&["ct", &user.to_string()]);
            let mut pipe = redis::pipe();
            pipe.atomic().smembers(&key).del(&key).ignore();
            if !contacts.is_empty() {
                let names: Vec<String> = contacts.iter().map(UserId::to_string).collect();
                pipe.sadd(&key, names).ignore();
                // Redis forgets the list on its own once it was kept long enough.
                pipe.pexpire(&key, i64::try_from(keep_ms).unwrap_or(i64::MAX))
                    .ignore();
            }
            let mut con = self.con.clone();
            let (old,): (Vec<String>,) = pipe.query_async(&mut con).await?;
            Ok(old.iter().filter_map(|s| s.parse().ok()).collect())
        })
    }

    fn contacts(&self, user: UserId) -> BoxFut<'_, Result<Vec<UserId>, StoreError>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let names: Vec<String> = con.smembers(k(&["ct", &user.to_string()])).await?;
            Ok(names.iter().filter_map(|s| s.parse().ok()).collect())
        })
    }

    fn listed_by(
        &self,
        users: Vec<UserId>,
        contact: UserId,
    ) -> BoxFut<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            let c = contact.to_string();
            let mut pipe = redis::pipe();
            for u in &users {
                pipe.sismember(k(&["ct", &u.to_string()]), &c);
            }
            let mut con = self.con.clone();
            Ok(pipe.query_async(&mut con).await?)
        })
    }

    fn prune_contacts(&self, _now: Timestamp) -> BoxFut<'_, Result<u64, StoreError>> {
        // Every list carries its own expiry (set at each sync).
        Box::pin(std::future::ready(Ok(0)))
    }
}

impl Bus for RedisBackend {
    fn deliver(
        &self,
        entry: DeviceEntry,
        user: UserId,
        device: DeviceId,
        msg: BusMessage,
    ) -> BoxFut<'_, Result<Delivery, StoreError>> {
        Box::pin(async move {
            if entry.node == self.node {
                return Ok(deliver_local(&self.local, entry.conn, &user, &device, msg));
            }
            let mut rec = BusRecord {
                user,
                device,
                conn: entry.conn,
                frame: None,
                poke: false,
                close: None,
            };
            match msg {
                BusMessage::Frame(text) => rec.frame = Some(text.as_str().to_owned()),
                BusMessage::Poke => rec.poke = true,
                BusMessage::Close(code) => rec.close = Some(code),
            }
            let json = serde_json::to_string(&rec).map_err(corrupt)?;
            let mut con = self.con.clone();
            let receivers: i64 = con.publish(k(&["bus", &entry.node]), json).await?;
            Ok(if receivers > 0 {
                Delivery::Delivered
            } else {
                Delivery::Gone
            })
        })
    }
}
