//! Per-key budgets shared by every replica, in Redis (`[gateway]
//! limits_backend = "redis"`).
//!
//! One Lua script per admission, atomic in Redis:
//! - requests per second by GCRA: the key's "theoretical arrival time"
//!   moves on by `1 / rps` per request, and a request is admitted while it
//!   is at most `burst / rps` ahead of now;
//! - model tokens per minute by a bucket that refills continuously up to
//!   `tpm`, may go into debt (a request's tokens are known only after it
//!   ran), and admits while positive; admission reserves an estimate;
//! - settling adds the difference between what was used and what was
//!   reserved.
//!
//! Times are Redis's own clock (`TIME`), so replicas need not agree on
//! theirs. Keys are `meshops:limits:<key digest>:{r,t}`; they expire once
//! idle long enough to be full again.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// What the shared store said about a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Admitted,
    /// Over the request rate: retry after this many seconds.
    Rate(f64),
    /// Over the token budget: retry after this many seconds.
    Tokens(f64),
    /// As many of the key's requests are running as it may run.
    Concurrency,
}

/// What one admission asks of the shared store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// Requests per second and burst, when limited.
    pub rate: Option<(f64, f64)>,
    /// Tokens per minute, when limited.
    pub tpm: Option<f64>,
    /// Tokens to reserve.
    pub reserve: u64,
    /// Requests at once allowed, and this request's id and deadline (ms)
    /// in that count, when limited.
    pub concurrency: Option<(u32, u64, u64)>,
}

/// KEYS: rate key, tokens key. ARGV: ms per request (0: no rate limit),
/// burst, tokens per minute (0: no token budget), tokens to reserve.
/// Returns {verdict (0 admitted, 1 rate, 2 tokens), wait in ms}.
/// KEYS: rate key, tokens key, concurrency key. ARGV: ms per request (0:
/// no rate limit), burst, tokens per minute (0: no token budget), tokens to
/// reserve, concurrent requests allowed (0: no limit), this request's
/// member id, ms until its place is freed even if never released (its
/// deadline: a replica that dies holds nothing past it).
/// Returns {verdict (0 admitted, 1 rate, 2 tokens, 3 concurrency), wait in
/// ms}. Nothing is written unless the request is admitted.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local concurrency = tonumber(ARGV[5])
local tokens, stamp
if tpm > 0 then
  local b = redis.call('HMGET', KEYS[2], 'tokens', 'ms')
  tokens = tonumber(b[1]) or tpm
  stamp = tonumber(b[2]) or now
  if now > stamp then
    tokens = math.min(tpm, tokens + (now - stamp) * tpm / 60000)
    stamp = now
  end
  if tokens <= 0 then
    return {2, math.ceil((1 - tokens) * 60000 / tpm)}
  end
end
local new_tat
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    return {1, allow_at - now}
  end
end
if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= concurrency then
    return {3, 1000}
  end
  local expires = now + tonumber(ARGV[7])
  redis.call('ZADD', KEYS[3], expires, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]) + 1000)
end
if interval > 0 then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
end
if tpm > 0 then
  tokens = tokens - reserve
  redis.call('HSET', KEYS[2], 'tokens', tokens, 'ms', stamp)
  redis.call('PEXPIRE', KEYS[2], 120000 + math.max(0, math.ceil(-tokens * 60000 / tpm)))
end
return {0, 0}
";

/// KEYS: tokens key, concurrency key. ARGV: tokens per minute (0: no
/// budget), tokens to add to the charge (negative: hand back part of a
/// reservation), the request's member id in the concurrency set ("": none).
const SETTLE: &str = r"
local tpm = tonumber(ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
end
if tpm <= 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delta = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(b[1]) or tpm
local stamp = tonumber(b[2]) or now
if now > stamp then
  tokens = math.min(tpm, tokens + (now - stamp) * tpm / 60000)
  stamp = now
end
tokens = math.min(tpm, tokens - delta)
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ms', stamp)
redis.call('PEXPIRE', KEYS[1], 120000 + math.max(0, math.ceil(-tokens * 60000 / tpm)))
return 0
";

/// The shared budgets' connection and scripts (cheap to clone).
#[derive(Clone)]
pub struct SharedLimits {
    conn: ConnectionManager,
    admit: redis::Script,
    settle: redis::Script,
}

impl SharedLimits {
    /// A client for `url`; it connects on first use and reconnects after
    /// Redis comes back. A call waits at most half a second.
    pub fn connect(url: &str) -> Result<SharedLimits, String> {
        let client = redis::Client::open(url).map_err(|e| format!("gateway.redis_url: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("redis: {e}"))?;
        Ok(SharedLimits { conn, admit: redis::Script::new(ADMIT), settle: redis::Script::new(SETTLE) })
    }

    /// Checks and charges one request of the key whose digest is `key`.
    pub async fn admit(&self, key: &str, ask: Ask) -> Result<Verdict, redis::RedisError> {
        let (interval, burst) = ask.rate.map_or((0.0, 0.0), |(rps, burst)| (1000.0 / rps, burst));
        let (limit, member, hold_ms) = ask.concurrency.unwrap_or((0, 0, 0));
        let mut conn = self.conn.clone();
        let (verdict, wait_ms): (i64, i64) = self
            .admit
            .key(format!("meshops:limits:{key}:r"))
            .key(format!("meshops:limits:{key}:t"))
            .key(format!("meshops:limits:{key}:c"))
            .arg(interval)
            .arg(burst)
            .arg(ask.tpm.unwrap_or(0.0))
            .arg(ask.reserve)
            .arg(limit)
            .arg(member)
            .arg(hold_ms)
            .invoke_async(&mut conn)
            .await?;
        let wait = wait_ms.max(0) as f64 / 1000.0;
        Ok(match verdict {
            0 => Verdict::Admitted,
            1 => Verdict::Rate(wait),
            3 => Verdict::Concurrency,
            _ => Verdict::Tokens(wait),
        })
    }

    /// Adds `delta` tokens to the key's charge (the used tokens minus the
    /// reservation) and frees the request's place `member`, if it held one.
    pub async fn settle(
        &self,
        key: &str,
        tpm: Option<f64>,
        delta: i64,
        member: Option<u64>,
    ) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .settle
            .key(format!("meshops:limits:{key}:t"))
            .key(format!("meshops:limits:{key}:c"))
            .arg(tpm.unwrap_or(0.0))
            .arg(delta)
            .arg(member.map(|m| m.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}
