-- confirm_begin: held -> confirming with a lease, before the order is written
-- to MongoDB. A second confirm while confirming also proceeds: the order's
-- _id is the reservation id, so only one order can ever be written.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:hold:<rid>  KEYS[3] fd:{S}:deadlines
-- ARGV[1] rid  ARGV[2] buyer  ARGV[3] lease (ms)
-- Returns JSON, r is one of:
--   confirming {qty, units, slots, price, currency, expires}
--   missing (no such hold in Redis) | not_found (another buyer's hold)
--   confirmed | cancelled | expired
local now = fd_now()
local h = fd_load_hold(KEYS[2])
if not h then return fd_reply({r = 'missing'}) end
if h.user ~= ARGV[2] then return fd_reply({r = 'not_found'}) end
local sale = redis.call('HMGET', KEYS[1], 'epoch', 'price', 'currency')
if h.epoch ~= (sale[1] or '') then return fd_reply({r = 'expired'}) end
if h.state == 'confirmed' or h.state == 'cancelled' or h.state == 'expired' then
  return fd_reply({r = h.state})
end
if h.state == 'held' and now >= h.expires then return fd_reply({r = 'expired'}) end
local lease = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'state', 'confirming', 'lease', lease)
redis.call('ZADD', KEYS[3], lease, ARGV[1])
return fd_reply({r = 'confirming', qty = h.qty, units = h.units, slots = h.slots,
  price = tonumber(sale[2]), currency = sale[3], expires = h.expires})
