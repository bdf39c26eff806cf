-- restore_sale: the last step of a rebuild from MongoDB, fenced: it runs
-- only while the caller still owns the rebuild lock, and only on the state
-- it was meant for (no sale at all, or a stale sale: one whose seq is still
-- below what MongoDB has recorded). It unlinks what Redis has of the sale
-- (freed in the background), renames into place what the caller staged
-- under keys named by its lock token (the list is `STAGED` in
-- src/store/keys.rs), writes the sale hash, announces `restored` and lets
-- the line take free units. A rebuild that lost its lock or whose sale
-- changed meanwhile changes nothing.
-- Bound: O(keys) for the unlinks and renames (UNLINK frees large values
-- off the main thread), FD_PROMOTIONS promotions; the reaper promotes on.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted early lobby lobbyin admitted admitdue restore stagefree
--   stagebought stagewait stagewaitq stageearly stagelobby stagelobbyin
--   stageadmitted stageadmitdue returned stagereturned
-- ARGV[1] publish command and channel  ARGV[2] lock token
-- ARGV[3] `absent`; `copy:<epoch>`: the sale is replaced only while its
-- copy is that one; or the seq MongoDB has recorded: the sale is replaced
-- only while its own seq is below it
-- ARGV[4] total  ARGV[5] per-buyer limit  ARGV[6] starts (ms)  ARGV[7] ends
-- (ms)  ARGV[8] hold (ms)  ARGV[9] closed (0|1)  ARGV[10] units sold
-- ARGV[11] next never-issued serial  ARGV[12] price  ARGV[13] currency
-- ARGV[14] waiting list enabled (0|1)  ARGV[15] seq this copy carries on
-- from  ARGV[16] name  ARGV[17] last join ticket  ARGV[18] line closed
-- (0|1)  ARGV[19] epoch (new for every rebuild)  ARGV[20] the sale's
-- version in MongoDB  ARGV[21] lobby admissions per second (0: no lobby)
-- ARGV[22] how long an admission lasts (ms)  ARGV[23..26] the lobby's
-- joined, admitted, used and lapsed counts  ARGV[27] the lobby's opening
-- (ms)  ARGV[28] the seed's SHA-256  ARGV[29] drawn (0|1)  ARGV[30] buyers
-- in the draw  ARGV[31] how long a payment may take (ms; 0: no payment)
-- ARGV[32] the last batch of the log the rebuild read (in `restored`)
-- Replies (r): restored | lost | exists | changed
if redis.call('GET', K.restore) ~= ARGV[2] then return fd_reply({r = 'lost'}) end
local exists = redis.call('EXISTS', K.sale) == 1
local copy = string.match(ARGV[3], '^copy:(.+)$')
if ARGV[3] == 'absent' then
  if exists then return fd_reply({r = 'exists'}) end
elseif not exists then
  return fd_reply({r = 'changed'})
elseif copy then
  if redis.call('HGET', K.sale, 'epoch') ~= copy then return fd_reply({r = 'changed'}) end
elseif fd_num(redis.call('HGET', K.sale, 'seq')) >= tonumber(ARGV[3]) then
  return fd_reply({r = 'changed'})
end
redis.call('UNLINK', K.sale, K.holds, K.deadlines, K.ended, K.free, K.taken,
  K.bought, K.holding, K.wait, K.waitq, K.promoted, K.early, K.lobby,
  K.lobbyin, K.admitted, K.admitdue, K.returned)
local staged = {{K.stagefree, K.free}, {K.stagebought, K.bought},
  {K.stagewait, K.wait}, {K.stagewaitq, K.waitq}, {K.stageearly, K.early},
  {K.stagelobby, K.lobby}, {K.stagelobbyin, K.lobbyin},
  {K.stageadmitted, K.admitted}, {K.stageadmitdue, K.admitdue},
  {K.stagereturned, K.returned}}
for _, pair in ipairs(staged) do
  if redis.call('EXISTS', pair[1]) == 1 then
    redis.call('PERSIST', pair[1])
    redis.call('RENAME', pair[1], pair[2])
  end
end
local total, sold = tonumber(ARGV[4]), tonumber(ARGV[10])
redis.call('HSET', K.sale, 'total', total, 'limit', ARGV[5], 'starts', ARGV[6],
  'ends', ARGV[7], 'hold_ms', ARGV[8], 'closed', ARGV[9], 'next', ARGV[11],
  'available', total - sold, 'held', 0, 'sold', sold, 'seq', ARGV[15],
  'price', ARGV[12], 'currency', ARGV[13], 'waitlist', ARGV[14],
  'wl_closed', ARGV[18], 'name', ARGV[16], 'wait_ticket', ARGV[17],
  'epoch', ARGV[19], 'version', ARGV[20], 'admit_rate', ARGV[21],
  'admit_ms', ARGV[22], 'lobby_joined', ARGV[23], 'lobby_admitted', ARGV[24],
  'lobby_used', ARGV[25], 'lobby_lapsed', ARGV[26], 'opens', ARGV[27],
  'commit', ARGV[28], 'drawn', ARGV[29], 'draw_count', ARGV[30], 'taken_n', 0,
  'pay_ms', ARGV[31])
local now = fd_now()
local s = fd_sale()
fd_emit(s, 'restored', now, {log_n = tonumber(ARGV[32])})
fd_promote(s, now)
fd_flush(s)
return fd_reply({r = 'restored'})
