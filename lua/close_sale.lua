-- close_sale: end a sale now. No new holds; live holds may still be
-- confirmed until their own deadline. The waiting list closes.
-- KEYS: sale events wait
-- ARGV[1] publish command and channel
-- Replies (r): ok {ends} | missing | ended {ends} (closed before)
return fd_with_sale(function(s, now)
  if s.closed == 1 then return {r = 'ended', ends = s.ends} end
  local ends = math.min(s.ends, now)
  fd_update(s, {closed = 1, ends = ends, wl_closed = 1})
  fd_emit(s, 'sale_closed', now)
  return {r = 'ok', ends = ends}
end)
