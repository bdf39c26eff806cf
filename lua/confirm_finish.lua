-- confirm_finish: orders are durable in MongoDB; mark their holds confirmed
-- and the units sold, several holds of one sale in one step (a confirm
-- batch). Fewer holds out may then let the line take set-aside units, or
-- close it.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2..] reservation ids
-- Replies (r): missing (the sale is not in Redis) | done {holds: one per
-- rid, in order: confirmed | already (confirmed before) | missing (no such
-- hold) | stale (its units were already returned)}; for missing and stale
-- the caller applies the order with apply_order.
-- Bound: O(rids) (callers send at most 25), FD_PROMOTIONS promotions.
return fd_with_sale(function(s, now)
  local outcomes = {}
  for i = 2, #ARGV do
    local rid = ARGV[i]
    local h = fd_hold(rid)
    local outcome
    if not h then
      outcome = 'missing'
    elseif h.state == 'confirmed' then
      outcome = 'already'
    elseif not fd_is_live(h) then
      outcome = 'stale'
    else
      fd_confirm_hold(s, rid, h, now)
      outcome = 'confirmed'
    end
    outcomes[#outcomes + 1] = outcome
  end
  fd_promote(s, now)
  return {r = 'done', holds = outcomes}
end)
