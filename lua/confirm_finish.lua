-- confirm_finish: the order is durable in MongoDB; mark the hold confirmed
-- and its units sold. Fewer holds out may let the line take set-aside
-- units, or close it.
-- KEYS: sale holds deadlines ended free bought holding events wait waitq
--   promoted
-- ARGV[1] channel  ARGV[2] rid
-- Replies (r): confirmed | already (confirmed before) | missing (hold or
-- sale not in Redis) | stale {state} (its units were already returned: the
-- caller repairs Redis from MongoDB).
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if h.state == 'confirmed' then return {r = 'already'} end
  if not fd_is_live(h) then return {r = 'stale', state = h.state} end
  redis.call('HINCRBY', K.sale, 'held', -h.qty)
  redis.call('HINCRBY', K.sale, 'sold', h.qty)
  redis.call('HINCRBY', K.sale, 'holds_confirmed', 1)
  redis.call('HINCRBY', K.bought, h.user, h.qty)
  fd_end_hold(rid, h, 'confirmed', now)
  fd_emit('confirmed', now, {rid = rid, user = h.user, qty = h.qty})
  fd_promote(now)
  return {r = 'confirmed'}
end)
