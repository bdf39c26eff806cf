-- waitlist_join: a buyer joins the end of the sale's waiting list.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:wait  KEYS[3] fd:{S}:waitq
-- KEYS[4] fd:{S}:bought  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:promoted
-- KEYS[7] fd:{S}:events
-- ARGV[1] channel  ARGV[2] buyer  ARGV[3] quantity
-- Returns JSON, r is one of:
--   joined {position} | waiting {position} (already in line, unchanged)
--   promoted {rid}        the buyer holds units from the line already
--   has_hold {rid}        the buyer holds units: confirm or cancel them first
--   stock_available       units are free and nobody waits: reserve instead
--   sold_out              every unit is sold for good (the line is closed)
--   limit_exceeded {bought, limit}   the buyer could never be served
--   disabled | upcoming | ended | missing
local now = fd_now()
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local s = fd_load_sale(KEYS[1])
if s.waitlist ~= 1 then return fd_reply({r = 'disabled'}) end
if s.closed == 1 or now >= s.ends then return fd_reply({r = 'ended'}) end
if now < s.starts then return fd_reply({r = 'upcoming'}) end
local buyer = ARGV[2]
local rank = redis.call('ZRANK', KEYS[2], buyer)
if rank then return fd_reply({r = 'waiting', position = rank + 1}) end
if s.wl_closed == 1 or (s.sold >= s.total and s.held == 0) then
  return fd_reply({r = 'sold_out'})
end
local live = redis.call('HGET', KEYS[5], buyer)
if live then
  local h = fd_load_hold(fd_keys(KEYS[1]).hold(live))
  if h and h.epoch == s.epoch and (h.state == 'held' or h.state == 'confirming') then
    if redis.call('HGET', KEYS[6], buyer) == live then
      return fd_reply({r = 'promoted', rid = live})
    end
    return fd_reply({r = 'has_hold', rid = live})
  end
end
local qty = tonumber(ARGV[3])
local bought = fd_num(redis.call('HGET', KEYS[4], buyer))
if bought + qty > s.limit then
  return fd_reply({r = 'limit_exceeded', bought = bought, limit = s.limit})
end
if s.available > 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  return fd_reply({r = 'stock_available'})
end
local ticket = redis.call('HINCRBY', KEYS[1], 'wait_ticket', 1)
redis.call('ZADD', KEYS[2], ticket, buyer)
redis.call('HSET', KEYS[3], buyer, qty)
redis.call('HDEL', KEYS[6], buyer)
redis.call('HINCRBY', KEYS[1], 'waitlist_joins', 1)
local position = redis.call('ZCARD', KEYS[2])
fd_emit(KEYS[1], KEYS[7], ARGV[1], 'waitlist_joined', now,
  {user = buyer, qty = qty, position = position, ticket = ticket})
return fd_reply({r = 'joined', position = position})
