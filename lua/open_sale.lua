-- open_sale: put a new sale's live state into Redis. Does nothing when the
-- sale is open (a rebuild from MongoDB is restore_sale).
-- KEYS: sale events wait
-- ARGV[1] publish command and channel  ARGV[2] total  ARGV[3] per-buyer limit
-- ARGV[4] starts (ms)  ARGV[5] ends (ms)  ARGV[6] hold (ms)
-- ARGV[7] price (minor units)  ARGV[8] currency
-- ARGV[9] waiting list enabled (0|1)  ARGV[10] name  ARGV[11] epoch
-- ARGV[12] the sale's version in MongoDB  ARGV[13] lobby admissions per
-- second (0: no lobby)  ARGV[14] how long an admission lasts (ms)
-- ARGV[15] the lobby's opening (ms)  ARGV[16] the SHA-256 of the lobby's
-- seed (public from the opening)  ARGV[17] how long a payment may take
-- (ms; 0: the sale takes no payment)
-- Bound: O(1).
-- Replies (r): opened | exists
if redis.call('EXISTS', K.sale) == 1 then return fd_reply({r = 'exists'}) end
redis.call('HSET', K.sale, 'total', ARGV[2], 'limit', ARGV[3], 'starts', ARGV[4],
  'ends', ARGV[5], 'hold_ms', ARGV[6], 'closed', 0, 'next', 1,
  'available', ARGV[2], 'held', 0, 'sold', 0, 'seq', 0, 'price', ARGV[7],
  'currency', ARGV[8], 'waitlist', ARGV[9], 'wl_closed', 0, 'name', ARGV[10],
  'epoch', ARGV[11], 'version', ARGV[12], 'admit_rate', ARGV[13],
  'admit_ms', ARGV[14], 'opens', ARGV[15], 'commit', ARGV[16], 'drawn', 0,
  'pay_ms', ARGV[17])
local s = fd_sale()
fd_emit(s, 'opened', fd_now())
fd_flush(s)
return fd_reply({r = 'opened'})
