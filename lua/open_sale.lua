-- open_sale: put a sale's live state into Redis (a new sale, or a rebuild
-- from MongoDB after Redis lost it). Does nothing when the sale is open.
-- KEYS[1] fd:{S}:sale   KEYS[2] fd:{S}:events
-- ARGV[1] channel  ARGV[2] total  ARGV[3] per-buyer limit  ARGV[4] starts (ms)
-- ARGV[5] ends (ms)  ARGV[6] hold (ms)  ARGV[7] closed (0|1)
-- ARGV[8] units already sold  ARGV[9] next never-issued serial
-- ARGV[10] epoch (new for every rebuild; holds of other epochs are lost)
-- ARGV[11] price (minor units)  ARGV[12] currency  ARGV[13] kind (opened|restored)
-- ARGV[14] waiting list enabled (0|1)
-- ARGV[15] seq of the last change already recorded (0 for a new sale)
-- Returns {"r":"opened"} or {"r":"exists"}.
if redis.call('EXISTS', KEYS[1]) == 1 then return fd_reply({r = 'exists'}) end
local total = tonumber(ARGV[2])
local sold = tonumber(ARGV[8])
redis.call('HSET', KEYS[1], 'total', total, 'limit', ARGV[3], 'starts', ARGV[4],
  'ends', ARGV[5], 'hold_ms', ARGV[6], 'closed', ARGV[7], 'next', ARGV[9],
  'available', total - sold, 'held', 0, 'sold', sold, 'seq', ARGV[15],
  'epoch', ARGV[10], 'price', ARGV[11], 'currency', ARGV[12],
  'waitlist', ARGV[14], 'wl_closed', ARGV[7])
fd_emit(KEYS[1], KEYS[2], ARGV[1], ARGV[13], fd_now())
return fd_reply({r = 'opened'})
