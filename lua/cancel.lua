-- cancel: the buyer gives a held (or paying) hold back; its units go to
-- the waiting list first, then to open stock. Cancelling twice is not an
-- error. Money that arrives for a cancelled hold is late: a refund is due.
-- Bound: O(the hold's units, at most 1000), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] buyer
-- Replies (r): cancelled (now or before) | missing | not_found (another
-- buyer's hold) | expired | confirming | confirmed
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.user ~= ARGV[3] then return {r = 'not_found'} end
  if not fd_is_waiting(h) then return {r = h.state} end
  fd_release(s, rid, h, 'cancelled', now)
  return {r = 'cancelled'}
end)
