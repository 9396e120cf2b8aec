"""The Lua scripts that shared zones run in Redis: each call is one atomic step for a batch
of keys, so instances never read a count in one call and write it back in another.

RATE: nginx's leaky bucket (edgeproxy.limits.leaky) on a hash {e: excess, l: last ms} per
key, with Redis' own clock (one clock for every instance). It accounts the requests an
instance let through since its last call and returns each key's excess. It never refuses:
the instance decided already. A bucket may so go above the burst when instances let
through requests at the same moment; the surplus stays, so every instance refuses the key
until the bucket has leaked it (the budget is paid back, not lost).

    KEYS: bucket keys; ARGV: rate (thousandths of a request per second), the millisecond
    to account at (0: Redis' clock; tests give one), then the request count per key.

CONNECTIONS: per key a hash {holder: count}; a holder is one worker of one instance and
owns a lease key that it renews. A holder whose lease has expired is dead: its field is
deleted and its slots are free. The caller sets its own count (an absolute value, so a
call repeated after a timeout counts nothing twice) and gets the others' live total.

    KEYS: the caller's lease key, then connection keys; ARGV: holder id, lease ms, the
    prefix of lease keys, then the caller's count per key.
"""

from __future__ import annotations

RATE = """
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i + 2])
  local state = redis.call('HMGET', key, 'e', 'l')
  local excess, last = tonumber(state[1]), tonumber(state[2])
  if excess == nil then
    -- a key seen for the first time: its first request is free, as in nginx
    excess = 0
    if n > 1 then excess = 1000 * (n - 1) end
    last = now
  elseif n > 0 then
    local ms = now - last
    if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
    excess = excess - math.floor(rate * ms / 1000) + 1000
    if excess < 0 then excess = 0 end
    excess = excess + 1000 * (n - 1)
    if ms > 0 then last = now end
  end
  if n > 0 then
    redis.call('HSET', key, 'e', excess, 'l', last)
    -- gone once it has leaked empty (plus a minute): Redis holds only active keys
    redis.call('PEXPIRE', key, math.floor(excess * 1000 / rate) + 60000)
  end
  out[i] = excess
end
return out
"""

CONNECTIONS = """
local holder, lease, leases = ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('SET', KEYS[1], '1', 'PX', lease)
local out = {}
for i = 2, #KEYS do
  local key, mine = KEYS[i], tonumber(ARGV[i + 2])
  if mine > 0 then
    redis.call('HSET', key, holder, mine)
  else
    redis.call('HDEL', key, holder)
  end
  local others = 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local who = fields[j]
    if who ~= holder then
      if redis.call('EXISTS', leases .. who) == 1 then
        others = others + tonumber(fields[j + 1])
      else
        redis.call('HDEL', key, who)
      end
    end
  end
  -- live holders renew their keys well within this; a key of dead ones goes away
  redis.call('PEXPIRE', key, lease * 3)
  out[i - 1] = others
end
return out
"""
