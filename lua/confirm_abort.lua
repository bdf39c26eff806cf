-- confirm_abort: the hold's order is known not to be in MongoDB and never
-- to land. `unwritten` (the write certainly failed): confirming -> held (or
-- paying, for a hold whose payment was confirming it), or expired (units
-- returned) past the hold's deadline. `fenced` (the confirm
-- was given up and its order fenced off): expired at once, whatever live
-- state it is in. An `unwritten` abort carries the lease its confirm got:
-- once the reaper has claimed the hold (a new lease), the reaper decides.
-- Bound: O(the hold's units, at most 1000), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] unwritten | fenced
-- ARGV[4] the lease the confirm got (unwritten)
-- Replies (r): held | paying | expired | missing | unchanged {state} |
--   reclaimed
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if ARGV[3] == 'fenced' then
    if not fd_is_live(h) then return {r = 'unchanged', state = h.state} end
    fd_release(s, rid, h, 'expired', now)
    return {r = 'expired'}
  end
  if h.state ~= 'confirming' then return {r = 'unchanged', state = h.state} end
  if h.lease ~= tonumber(ARGV[4]) then return {r = 'reclaimed'} end
  if now < h.expires then
    h.state = h.payment and 'paying' or 'held'
    h.lease = nil
    fd_put_hold(rid, h)
    redis.call('ZADD', K.deadlines, h.expires, rid)
    return {r = h.state}
  end
  fd_release(s, rid, h, 'expired', now)
  return {r = 'expired'}
end)
