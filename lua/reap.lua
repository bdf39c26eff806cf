-- reap: expire due holds (their units go to the waiting list first), claim
-- confirming holds whose lease ran out, and close the line when the sale ends.
-- Safe when several instances reap at once: each due hold is handled once
-- because its state changes in this same atomic step. Hold keys are built
-- from the sale key's prefix and so share its hash tag (one slot).
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:deadlines  KEYS[3] fd:{S}:free
-- KEYS[4] fd:{S}:holding  KEYS[5] fd:{S}:events
-- ARGV[1] channel  ARGV[2] most holds to handle  ARGV[3] claim lease (ms)
-- Returns JSON {r, expired, claimed: [rid], next (ms or -1), now}; r is
-- "ok" or "missing" when the sale is not in Redis.
local now = fd_now()
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local k = fd_keys(KEYS[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local expired = 0
local claimed = {}
for _, rid in ipairs(due) do
  local hold_key = k.hold(rid)
  local h = fd_load_hold(hold_key)
  if h and h.state == 'held' then
    fd_release(KEYS[1], rid, h, 'expired', ARGV[1], now)
    expired = expired + 1
  elseif h and h.state == 'confirming' then
    local lease = now + tonumber(ARGV[3])
    redis.call('HSET', hold_key, 'lease', lease)
    redis.call('ZADD', KEYS[2], lease, rid)
    claimed[#claimed + 1] = rid
  else
    redis.call('ZREM', KEYS[2], rid)
  end
end
-- The end of the window closes the waiting list, once.
local s = fd_load_sale(KEYS[1])
if (s.closed == 1 or now >= s.ends) and s.wl_closed ~= 1 then
  redis.call('HSET', KEYS[1], 'wl_closed', 1)
  fd_emit(KEYS[1], KEYS[5], ARGV[1], 'sale_closed', now)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local next_due = -1
if first[2] then next_due = tonumber(first[2]) end
local out = {r = 'ok', expired = expired, next = next_due, now = now, more = #due == tonumber(ARGV[2])}
if #claimed > 0 then out.claimed = claimed end
return fd_reply(out)
