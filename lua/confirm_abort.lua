-- confirm_abort: the order is known not to be in MongoDB; confirming -> held,
-- or expired (units returned) when the hold's deadline has passed.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:hold:<rid>  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:free  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:events
-- ARGV[1] channel  ARGV[2] rid
-- Returns JSON, r is one of: held, expired, missing, unchanged {state}.
local now = fd_now()
local h = fd_load_hold(KEYS[2])
if not h or redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
if h.state ~= 'confirming' then return fd_reply({r = 'unchanged', state = h.state}) end
local rid = ARGV[2]
if now < h.expires then
  redis.call('HSET', KEYS[2], 'state', 'held')
  redis.call('ZADD', KEYS[3], h.expires, rid)
  return fd_reply({r = 'held'})
end
fd_release(KEYS[1], rid, h, 'expired', ARGV[1], now)
return fd_reply({r = 'expired'})
