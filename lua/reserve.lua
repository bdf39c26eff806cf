-- reserve: take units for a buyer as one hold with a deadline.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:free  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:bought  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:events
-- KEYS[7] fd:{S}:hold:<rid>  KEYS[8] idempotency key (used when ARGV[5] > 0)
-- ARGV[1] channel  ARGV[2] rid  ARGV[3] buyer  ARGV[4] quantity
-- ARGV[5] idempotency key lifetime in seconds (0: no key)
-- Returns JSON, r is one of:
--   created  {rid, expires, units, slots}     a new hold
--   existing {rid}                            the buyer's live hold (or the
--                                             hold an earlier request with the
--                                             same idempotency key created)
--   missing                                   the sale is not in Redis
--   upcoming | ended                          outside the window
--   limit_exceeded {bought, held, limit}
--   sold_out {available}
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

local buyer = ARGV[3]
local prefix = fd_prefix(KEYS[1])
local live = redis.call('HGET', KEYS[5], buyer)
if live then
  local h = fd_load_hold(prefix .. 'hold:' .. live)
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
if s.available < qty then return fd_reply({r = 'sold_out', available = s.available}) end

-- Returned serials first, then never-issued ones.
local units = redis.call('SPOP', KEYS[2], qty)
local fresh = qty - #units
for i = 0, fresh - 1 do units[#units + 1] = tostring(s.next + i) end
if fresh > 0 then redis.call('HINCRBY', KEYS[1], 'next', fresh) end
local slots = {}
for i = 1, qty do slots[i] = tostring(bought + i) end

local rid = ARGV[2]
local expires = now + s.hold_ms
redis.call('HSET', KEYS[7], 'user', buyer, 'qty', qty, 'units', table.concat(units, ','),
  'slots', table.concat(slots, ','), 'state', 'held', 'created', now,
  'expires', expires, 'epoch', s.epoch)
redis.call('ZADD', KEYS[3], expires, rid)
redis.call('HSET', KEYS[5], buyer, rid)
redis.call('HINCRBY', KEYS[1], 'available', -qty)
redis.call('HINCRBY', KEYS[1], 'held', qty)
redis.call('HINCRBY', KEYS[1], 'holds_created', 1)
if idem_ttl > 0 then redis.call('SET', KEYS[8], rid, 'EX', idem_ttl) end
fd_emit(KEYS[1], KEYS[6], ARGV[1], 'reserved', now, {rid = rid, user = buyer, qty = qty})
return fd_reply({r = 'created', rid = rid, expires = expires})
