-- close_sale: end a sale now. No new holds; live holds may still be
-- confirmed until their own deadline. The waiting list closes.
-- KEYS[1] fd:{S}:sale   KEYS[2] fd:{S}:events
-- ARGV[1] channel
-- Returns {"r":"ok","ends":ms}, {"r":"missing"} or {"r":"ended","ends":ms}.
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local now = fd_now()
local s = fd_load_sale(KEYS[1])
if s.closed == 1 then return fd_reply({r = 'ended', ends = s.ends}) end
local ends = math.min(s.ends, now)
redis.call('HSET', KEYS[1], 'closed', 1, 'ends', ends, 'wl_closed', 1)
fd_emit(KEYS[1], KEYS[2], ARGV[1], 'sale_closed', now)
return fd_reply({r = 'ok', ends = ends})
