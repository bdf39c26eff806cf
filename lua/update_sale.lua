-- update_sale: apply an admin change MongoDB has recorded (at `version`) to
-- the sale's live state. Changes other than the name, the end of the window
-- and the hold time are refused once the sale has started, because holds
-- and orders already rely on them, and a lobby's settings once it has
-- opened; the caller then takes the change back in MongoDB. A change older
-- than what Redis has is ignored. Every such decision is taken here, on
-- this Redis' clock.
-- Bound: O(1).
-- KEYS: sale events wait
-- ARGV[1] publish command and channel  ARGV[2] starts  ARGV[3] ends
-- ARGV[4] hold (ms)  ARGV[5] total  ARGV[6] limit  ARGV[7] price
-- ARGV[8] currency  ARGV[9] 1 when a change needs the sale not to have
-- started  ARGV[10] waiting list enabled (0|1)  ARGV[11] name
-- ARGV[12] the sale's version in MongoDB  ARGV[13] lobby admissions per
-- second (0: no lobby)  ARGV[14] how long an admission lasts (ms)
-- ARGV[15] the lobby's opening (ms)  ARGV[16] the seed's SHA-256
-- ARGV[17] 1 when the change touches the lobby's settings (allowed only
-- before the lobby opens and before the start)
-- Replies (r): ok | missing | started | ended | lobby_open
--   | older
return fd_with_sale(function(s, now)
  local version = tonumber(ARGV[12])
  if fd_num(redis.call('HGET', K.sale, 'version')) >= version then
    return {r = 'older'}
  end
  if fd_outside_window(s, now) == 'ended' then return {r = 'ended'} end
  if ARGV[9] == '1' and now >= s.starts then return {r = 'started'} end
  if ARGV[17] == '1' and (now >= s.starts or (s.admit_rate > 0 and now >= s.opens)) then
    return {r = 'lobby_open'}
  end
  -- Raising stock (before the start; never lowered: checked once, in
  -- sales/mod.rs, against the version MongoDB fences) adds never-issued
  -- serials past the old total.
  local total = tonumber(ARGV[5])
  fd_update(s, {starts = tonumber(ARGV[2]), ends = tonumber(ARGV[3]),
    hold_ms = tonumber(ARGV[4]), total = total, limit = tonumber(ARGV[6]),
    price = ARGV[7], currency = ARGV[8], waitlist = tonumber(ARGV[10]),
    name = ARGV[11], available = s.available + total - s.total,
    version = version, admit_rate = tonumber(ARGV[13]),
    admit_ms = tonumber(ARGV[14]), opens = tonumber(ARGV[15]), commit = ARGV[16]})
  fd_emit(s, 'updated', now)
  return {r = 'ok'}
end)
