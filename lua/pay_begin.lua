-- pay_begin: the buyer of a held hold asks to pay. The hold becomes
-- `paying` with the intent's id, and its deadline moves once to the
-- sale's payment time from now, never past the sale's end plus that time
-- (and never earlier than it was). A repeat returns the same intent.
-- Bound: O(1).
-- KEYS: sale holds deadlines
-- ARGV[1] rid  ARGV[2] buyer  ARGV[3] the intent's id
-- Replies (r):
--   intent {payment, qty, price, currency, expires, first (this call made
--   it)}
--   no_payment (the sale takes none) | missing | not_found (another
--   buyer's hold) | expired | confirming | confirmed | cancelled
return fd_with_sale(function(s, now)
  if s.pay_ms <= 0 then return {r = 'no_payment'} end
  local rid = ARGV[1]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.user ~= ARGV[2] then return {r = 'not_found'} end
  local first = false
  if h.state == 'held' then
    if now >= h.expires then return {r = 'expired'} end
    local until_ms = math.min(now + s.pay_ms, s.ends + s.pay_ms)
    if until_ms > h.expires then h.expires = until_ms end
    h.state = 'paying'
    h.payment = ARGV[3]
    fd_put_hold(rid, h)
    redis.call('ZADD', K.deadlines, h.expires, rid)
    first = true
  elseif h.state ~= 'paying' then
    return {r = h.state}
  end
  return {r = 'intent', payment = h.payment, qty = h.qty, price = s.price,
    currency = s.currency, expires = h.expires, first = first}
end)
