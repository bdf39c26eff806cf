-- reserve: take units for a buyer as one hold with a deadline. While people
-- wait in line, nobody else may reserve: units coming back belong to them.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:free  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:bought  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:events
-- KEYS[7] fd:{S}:hold:<rid>  KEYS[8] idempotency key (used when ARGV[5] > 0)
-- KEYS[9] fd:{S}:wait
-- ARGV[1] channel  ARGV[2] rid  ARGV[3] buyer  ARGV[4] quantity
-- ARGV[5] idempotency key lifetime in seconds (0: no key)
-- Returns JSON, r is one of:
--   created  {rid, expires}                   a new hold
--   existing {rid, repeat_key}                the buyer's live hold (or the
--                                             hold an earlier request with the
--                                             same idempotency key created)
--   missing                                   the sale is not in Redis
--   upcoming | ended                          outside the window
--   limit_exceeded {bought, limit}
--   sold_out {available, waiting}             waiting > 0: people are in line
local now = fd_now()
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local idem_ttl = tonumber(ARGV[5])
if idem_ttl > 0 then
  local prev = redis.call('GET', KEYS[8])
  if prev then return fd_reply({r = 'existing', rid = prev, repeat_key = true}) end
end
local s = fd_load_sale(KEYS[1])
if s.closed == 1 or now >= s.ends then return fd_reply({r = 'ended'}) end
if now < s.starts then return fd_reply({r = 'upcoming'}) end

local k = fd_keys(KEYS[1])
local buyer = ARGV[3]
local live = redis.call('HGET', KEYS[5], buyer)
if live then
  local h = fd_load_hold(k.hold(live))
  if h and h.epoch == s.epoch and (h.state == 'held' or h.state == 'confirming') then
    return fd_reply({r = 'existing', rid = live})
  end
  redis.call('HDEL', KEYS[5], buyer)
end

local qty = tonumber(ARGV[4])
local bought = fd_num(redis.call('HGET', KEYS[4], buyer))
if bought + qty > s.limit then
  return fd_reply({r = 'limit_exceeded', bought = bought, limit = s.limit})
end
local waiting = redis.call('ZCARD', KEYS[9])
if waiting > 0 or s.available < qty then
  return fd_reply({r = 'sold_out', available = s.available, waiting = waiting})
end

local rid = ARGV[2]
local expires = fd_take_hold(k, s, buyer, qty, rid, now)
if idem_ttl > 0 then redis.call('SET', KEYS[8], rid, 'EX', idem_ttl) end
fd_emit(KEYS[1], KEYS[6], ARGV[1], 'reserved', now, {rid = rid, user = buyer, qty = qty})
return fd_reply({r = 'created', rid = rid, expires = expires})
