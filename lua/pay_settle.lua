-- pay_settle: the payment provider says how a hold's payment ended. The
-- one place the race between money and the deadline is decided: whatever
-- the order of a success and the deadline, exactly one of them wins here.
-- `succeeded` while the hold waits (paying, or held) before its deadline:
-- confirming with a lease, as confirm_begin (the caller writes the order,
-- carrying the payment). At or past the deadline: the hold expires in this
-- same step (its units to the line first) and the money is late. Ended
-- (expired, cancelled): late. `failed`: a waiting hold is released at
-- once, its units to the line first; anything else is left as it is (a
-- failure after a success changes nothing).
-- Bound: O(the hold's units, at most 1000), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] the intent's
-- id  ARGV[4] succeeded | failed  ARGV[5] confirm lease (ms)
-- Replies (r):
--   confirming {user, qty, units, slots, price, currency, lease}
--   confirmed | late {state} | released | unchanged {state}
--   missing (no such hold in Redis: the caller asks MongoDB)
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h or (h.payment and h.payment ~= ARGV[3]) then return {r = 'missing'} end
  if ARGV[4] == 'failed' then
    if not fd_is_waiting(h) then return {r = 'unchanged', state = h.state} end
    fd_release(s, rid, h, 'cancelled', now)
    return {r = 'released'}
  end
  if fd_is_waiting(h) and now >= h.expires then
    fd_release(s, rid, h, 'expired', now)
    return {r = 'late', state = 'expired'}
  end
  if h.state == 'confirmed' then return {r = 'confirmed'} end
  if not fd_is_live(h) then return {r = 'late', state = h.state} end
  h.state = 'confirming'
  h.payment = ARGV[3]
  h.lease = now + tonumber(ARGV[5])
  fd_put_hold(rid, h)
  redis.call('ZADD', K.deadlines, h.lease, rid)
  return {r = 'confirming', user = h.user, qty = h.qty, units = h.units,
    slots = h.slots, price = s.price, currency = s.currency, lease = h.lease}
end)
