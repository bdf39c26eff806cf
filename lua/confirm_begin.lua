-- confirm_begin: held -> confirming with a lease, before the order is
-- written to MongoDB. A second confirm while confirming also proceeds: the
-- order's _id is the reservation id, so only one order can ever be written.
-- Bound: O(the hold's units, at most 1000).
-- KEYS: sale holds deadlines
-- ARGV[1] rid  ARGV[2] buyer  ARGV[3] lease (ms)
-- Replies (r):
--   confirming {qty, units, slots, price, currency, expires, lease}
--   missing (no such hold in Redis) | not_found (another buyer's hold)
--   confirmed | cancelled | expired
--   payment_required (the sale takes payment: the webhook confirms)
return fd_with_sale(function(s, now)
  local rid = ARGV[1]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.user ~= ARGV[2] then return {r = 'not_found'} end
  if not fd_is_live(h) then return {r = h.state} end
  if s.pay_ms > 0 then return {r = 'payment_required'} end
  if h.state == 'held' and now >= h.expires then return {r = 'expired'} end
  h.state = 'confirming'
  h.lease = now + tonumber(ARGV[3])
  fd_put_hold(rid, h)
  redis.call('ZADD', K.deadlines, h.lease, rid)
  return {r = 'confirming', qty = h.qty, units = h.units, slots = h.slots,
    price = s.price, currency = s.currency, expires = h.expires, lease = h.lease}
end)
