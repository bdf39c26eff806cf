-- waitlist_leave: a buyer leaves the line. The next in line may then fit
-- the units set aside for the head, so promotion runs in the same step.
-- Bound: O(log line), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines free taken bought holding events wait waitq
--   promoted
-- ARGV[1] publish command and channel  ARGV[2] buyer
-- Replies (r): left | not_listed | missing
return fd_with_sale(function(s, now)
  local buyer = ARGV[2]
  local ticket = redis.call('ZSCORE', K.wait, buyer)
  if not ticket then return {r = 'not_listed'} end
  fd_line_remove(buyer)
  redis.call('HDEL', K.waitq, buyer)
  fd_emit(s, 'waitlist_left', now, {user = buyer, ticket = tonumber(ticket)})
  fd_promote(s, now)
  return {r = 'left'}
end)
