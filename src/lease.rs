//! A Redis key that one holder at a time keeps, with a TTL the holder renews: a gateway
//! node's number tag (`cluster/addressed.rs`), a Redis queue's consumer
//! (`doors/redis_queue.rs`). A holder that dies (kill -9) loses it when the TTL runs out.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::LuaInterface;

/// KEYS the key; ARGV the holder, the TTL in ms. Renews the key if the holder has it,
/// takes it if nobody does; 1 if the holder has it after, else 0.
const HOLD_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Takes or renews `key` for `holder` for `ttl`: whether `holder` has it now.
pub async fn hold(
    client: &Client,
    key: String,
    holder: &str,
    ttl: Duration,
) -> Result<bool, fred::error::Error> {
    let ms = ttl.as_millis().max(1).to_string();
    let held: i64 = client
        .eval(HOLD_SCRIPT, vec![key], vec![holder.to_owned(), ms])
        .await?;
    Ok(held == 1)
}
