-- waitlist_join: a buyer joins the end of the sale's waiting list.
-- On a lobby sale the buyer needs a live admission; joining uses it.
-- Bound: O(log line).
-- KEYS: sale holds bought holding events wait waitq promoted admitted
--   admitdue lobbylog
-- ARGV[1] publish command and channel  ARGV[2] buyer  ARGV[3] quantity
-- Replies (r):
--   joined {position} | waiting {position} (already in
--                         line, unchanged)
--   not_admitted          a lobby sale, and the buyer has no live admission
--   promoted {rid}        the buyer holds units from the line already
--   has_hold {rid}        the buyer holds units: confirm or cancel them first
--   stock_available       the units wanted are free and nobody waits:
--                         reserve instead
--   sold_out              every unit is sold for good (the line is closed)
--   limit_exceeded {bought, limit}   the buyer could never be served
--   disabled | upcoming | ended | missing
return fd_with_sale(function(s, now)
  if s.waitlist ~= 1 then return {r = 'disabled'} end
  local outside = fd_outside_window(s, now)
  if outside then return {r = outside} end
  local buyer = ARGV[2]
  local rank = redis.call('ZRANK', K.wait, buyer)
  if rank then return {r = 'waiting', position = rank + 1} end
  if s.wl_closed == 1 or (s.sold >= s.total and s.held == 0) then
    return {r = 'sold_out'}
  end
  local live = fd_live_hold(buyer)
  if live then
    if redis.call('HGET', K.promoted, buyer) == live then
      return {r = 'promoted', rid = live}
    end
    return {r = 'has_hold', rid = live}
  end
  if not fd_admitted(s, buyer, now) then return {r = 'not_admitted'} end
  local qty = tonumber(ARGV[3])
  local bought = fd_bought(buyer)
  if bought + qty > s.limit then
    return {r = 'limit_exceeded', bought = bought, limit = s.limit}
  end
  -- Fewer free than wanted is no reason to turn a buyer away: reserve
  -- would say sold_out.
  if s.available >= qty and fd_waiting(s) == 0 then return {r = 'stock_available'} end
  local ticket = redis.call('HINCRBY', K.sale, 'wait_ticket', 1)
  fd_line_add(ticket, buyer)
  redis.call('HSET', K.waitq, buyer, qty)
  redis.call('HDEL', K.promoted, buyer)
  redis.call('HINCRBY', K.sale, 'waitlist_joins', 1)
  local position = fd_waiting(s)
  fd_use_admission(s, buyer)
  fd_emit(s, 'waitlist_joined', now,
    {user = buyer, qty = qty, position = position, ticket = ticket})
  return {r = 'joined', position = position}
end)
