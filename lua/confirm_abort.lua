-- confirm_abort: the order is known not to be in MongoDB; confirming ->
-- held, or expired (units returned) when the hold's deadline has passed.
-- KEYS: sale holds deadlines ended free bought holding events wait waitq
--   promoted
-- ARGV[1] publish command and channel  ARGV[2] rid
-- Replies (r): held | expired | missing | unchanged {state}
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.state ~= 'confirming' then return {r = 'unchanged', state = h.state} end
  if now < h.expires then
    h.state = 'held'
    h.lease = nil
    fd_put_hold(rid, h)
    redis.call('ZADD', K.deadlines, h.expires, rid)
    return {r = 'held'}
  end
  fd_release(s, rid, h, 'expired', now)
  return {r = 'expired'}
end)
