-- open_sale: put a sale's live state into Redis (a new sale, or a rebuild
-- from MongoDB after Redis lost it). Does nothing when the sale is open.
-- KEYS: sale events wait
-- ARGV[1] publish command and channel  ARGV[2] total  ARGV[3] per-buyer limit
-- ARGV[4] starts (ms)  ARGV[5] ends (ms)  ARGV[6] hold (ms)  ARGV[7] closed (0|1)
-- ARGV[8] units already sold  ARGV[9] next never-issued serial
-- ARGV[10] price (minor units)  ARGV[11] currency  ARGV[12] kind
-- (opened|restored)  ARGV[13] waiting list enabled (0|1)
-- ARGV[14] seq of the last change already recorded (0 for a new sale)
-- ARGV[15] name
-- Replies (r): opened | exists
if redis.call('EXISTS', K.sale) == 1 then return fd_reply({r = 'exists'}) end
local total, sold = tonumber(ARGV[2]), tonumber(ARGV[8])
redis.call('HSET', K.sale, 'total', total, 'limit', ARGV[3], 'starts', ARGV[4],
  'ends', ARGV[5], 'hold_ms', ARGV[6], 'closed', ARGV[7], 'next', ARGV[9],
  'available', total - sold, 'held', 0, 'sold', sold, 'seq', ARGV[14],
  'price', ARGV[10], 'currency', ARGV[11], 'waitlist', ARGV[13],
  'wl_closed', ARGV[7], 'name', ARGV[15])
fd_emit(fd_sale(), ARGV[12], fd_now())
return fd_reply({r = 'opened'})
