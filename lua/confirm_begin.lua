-- confirm_begin: held -> confirming with a lease, before the order is
-- written to MongoDB. The confirms an instance received together come in
-- one call (a batch, several holds of one sale) and are served in order,
-- each answered as if it had come alone. A second confirm while
-- confirming also proceeds: the order's _id is the reservation id, so only
-- one order can ever be written.
-- Bound: O(the holds' units): at most 25 holds of at most 1000.
-- KEYS: sale holds deadlines
-- ARGV[1] lease (ms); then two per hold: rid, buyer
-- Replies (r): missing (the sale is not in Redis) | done {holds: one per
-- hold, in order:
--   confirming {qty, units, slots, price, currency, expires, lease}
--   missing (no such hold in Redis) | not_found (another buyer's hold)
--   confirmed | cancelled | expired
--   payment_required (the sale takes payment: the webhook confirms)}
local function begin_one(s, now, rid, buyer, lease)
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.user ~= buyer then return {r = 'not_found'} end
  if not fd_is_live(h) then return {r = h.state} end
  if s.pay_ms > 0 then return {r = 'payment_required'} end
  if h.state == 'held' and now >= h.expires then return {r = 'expired'} end
  h.state = 'confirming'
  h.lease = now + lease
  fd_put_hold(rid, h)
  redis.call('ZADD', K.deadlines, h.lease, rid)
  return {r = 'confirming', qty = h.qty, units = h.units, slots = h.slots,
    price = s.price, currency = s.currency, expires = h.expires, lease = h.lease}
end

return fd_with_sale(function(s, now)
  local lease = tonumber(ARGV[1])
  local holds = {}
  for i = 2, #ARGV, 2 do
    holds[#holds + 1] = begin_one(s, now, ARGV[i], ARGV[i + 1], lease)
  end
  return {r = 'done', holds = holds}
end)
