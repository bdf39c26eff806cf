-- confirm_finish: the order is durable in MongoDB; mark the hold confirmed
-- and its units sold.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:hold:<rid>  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:bought  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:events
-- ARGV[1] channel  ARGV[2] rid
-- Returns JSON, r is one of: confirmed, already (confirmed before), missing
-- (hold or sale not in Redis), stale {state} (units were already returned:
-- the caller repairs Redis from MongoDB).
local now = fd_now()
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local h = fd_load_hold(KEYS[2])
if not h then return fd_reply({r = 'missing'}) end
if h.state == 'confirmed' then return fd_reply({r = 'already'}) end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
if h.epoch ~= epoch or (h.state ~= 'confirming' and h.state ~= 'held') then
  return fd_reply({r = 'stale', state = h.state})
end
local rid = ARGV[2]
redis.call('HINCRBY', KEYS[1], 'held', -h.qty)
redis.call('HINCRBY', KEYS[1], 'sold', h.qty)
redis.call('HINCRBY', KEYS[1], 'holds_confirmed', 1)
redis.call('HINCRBY', KEYS[4], h.user, h.qty)
if redis.call('HGET', KEYS[5], h.user) == rid then redis.call('HDEL', KEYS[5], h.user) end
redis.call('ZREM', KEYS[3], rid)
redis.call('HSET', KEYS[2], 'state', 'confirmed')
redis.call('EXPIRE', KEYS[2], FD_TERMINAL_TTL)
fd_emit(KEYS[1], KEYS[6], ARGV[1], 'confirmed', now, {rid = rid, user = h.user, qty = h.qty})
-- Fewer holds out may let the line take set-aside units, or close it.
fd_promote(KEYS[1], ARGV[1], now)
return fd_reply({r = 'confirmed'})
