-- waitlist_place: where a buyer stands in a sale's line. Reads only. A
-- promotion counts while the hold made for it is live.
-- Bound: O(log line).
-- KEYS: sale holds wait promoted
-- ARGV[1] buyer
-- Replies (r): promoted {rid, expires, qty} | waiting {position} | closed
-- | not_listed | missing
return fd_with_sale(function(s, now)
  local buyer = ARGV[1]
  local rid = redis.call('HGET', K.promoted, buyer)
  if rid then
    local h = fd_hold(rid)
    if fd_is_live(h) then
      return {r = 'promoted', rid = rid, expires = h.expires, qty = h.qty}
    end
  end
  local rank = redis.call('ZRANK', K.wait, buyer)
  if not rank then return {r = 'not_listed'} end
  if not fd_line_open(s, now) then return {r = 'closed'} end
  return {r = 'waiting', position = rank + 1}
end)
