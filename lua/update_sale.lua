-- update_sale: apply an admin change to a sale's live state. Changes other
-- than the end of the window and the hold time are refused once the sale has
-- started, because holds and orders already rely on them.
-- KEYS[1] fd:{S}:sale   KEYS[2] fd:{S}:events
-- ARGV[1] channel  ARGV[2] starts  ARGV[3] ends  ARGV[4] hold (ms)
-- ARGV[5] total  ARGV[6] limit  ARGV[7] price  ARGV[8] currency
-- ARGV[9] 1 when a change needs the sale not to have started
-- ARGV[10] waiting list enabled (0|1)
-- Returns {"r":"ok"}, {"r":"missing"}, {"r":"started"}, {"r":"ended"},
-- {"r":"total_lowered"}.
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local now = fd_now()
local s = fd_load_sale(KEYS[1])
if s.closed == 1 or now >= s.ends then return fd_reply({r = 'ended'}) end
if ARGV[9] == '1' and now >= s.starts then return fd_reply({r = 'started'}) end
local total = tonumber(ARGV[5])
if total < s.total then return fd_reply({r = 'total_lowered'}) end
redis.call('HSET', KEYS[1], 'starts', ARGV[2], 'ends', ARGV[3], 'hold_ms', ARGV[4],
  'total', total, 'limit', ARGV[6], 'price', ARGV[7], 'currency', ARGV[8],
  'waitlist', ARGV[10])
-- Raising stock adds never-issued serials past the old total.
redis.call('HINCRBY', KEYS[1], 'available', total - s.total)
fd_emit(KEYS[1], KEYS[2], ARGV[1], 'updated', now)
return fd_reply({r = 'ok'})
