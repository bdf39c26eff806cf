-- close_sale: end a sale now, after MongoDB has recorded it (at `version`).
-- No new holds; live holds may still be confirmed until their own
-- deadline. The waiting list closes.
-- Bound: O(1).
-- KEYS: sale events wait
-- ARGV[1] publish command and channel  ARGV[2] the end MongoDB recorded (ms)
-- ARGV[3] the sale's version in MongoDB
-- Replies (r): ok | missing | ended (closed before)
return fd_with_sale(function(s, now)
  if s.closed == 1 then return {r = 'ended'} end
  fd_update(s, {closed = 1, ends = tonumber(ARGV[2]), wl_closed = 1,
    version = tonumber(ARGV[3])})
  fd_emit(s, 'sale_closed', now)
  return {r = 'ok'}
end)
