-- cancel: the buyer gives a held hold back; its units go to the waiting
-- list first, then to open stock.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:hold:<rid>  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:free  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:events
-- ARGV[1] channel  ARGV[2] rid  ARGV[3] buyer
-- Returns JSON, r is one of: cancelled (now or before), missing, not_found
-- (another buyer's hold), expired, confirming, confirmed.
local now = fd_now()
local h = fd_load_hold(KEYS[2])
if not h or redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
if h.user ~= ARGV[3] then return fd_reply({r = 'not_found'}) end
if h.epoch ~= (redis.call('HGET', KEYS[1], 'epoch') or '') then
  return fd_reply({r = 'expired'})
end
if h.state ~= 'held' then return fd_reply({r = h.state}) end
local rid = ARGV[2]
fd_release(KEYS[1], rid, h, 'cancelled', ARGV[1], now)
return fd_reply({r = 'cancelled'})
