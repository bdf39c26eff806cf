-- reserve: take units for a buyer as one hold with a deadline. While people
-- wait in line, nobody else may reserve: units coming back belong to them.
-- On a lobby sale the buyer needs a live admission (checked here, in the
-- same step that takes the units); the first hold uses it.
-- Bound: O(quantity, at most 1000).
-- KEYS: sale holds deadlines free taken bought holding events wait admitted
--   admitdue lobbylog, and idem when ARGV[5] > 0
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] buyer
-- ARGV[4] quantity  ARGV[5] idempotency key lifetime in seconds (0: no key)
-- Replies (r):
--   created {expires}                a new hold (its first hold uses the
--                                    buyer's lobby admission)
--   existing {rid, repeat_key}       the buyer's live hold (or the hold an
--                                    earlier request with the same
--                                    idempotency key created)
--   missing                          the sale is not in Redis
--   upcoming | ended                 outside the window
--   not_admitted                     a lobby sale, and the buyer has no
--                                    live admission
--   limit_exceeded {bought, limit}
--   sold_out {available, waiting}    waiting > 0: people are in line
return fd_with_sale(function(s, now)
  local idem_ttl = tonumber(ARGV[5])
  if idem_ttl > 0 then
    local earlier = redis.call('GET', K.idem)
    if earlier then return {r = 'existing', rid = earlier, repeat_key = true} end
  end
  local outside = fd_outside_window(s, now)
  if outside then return {r = outside} end
  local rid, buyer, qty = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local live = fd_live_hold(buyer)
  if live then return {r = 'existing', rid = live, repeat_key = false} end
  if not fd_admitted(s, buyer, now) then return {r = 'not_admitted'} end
  local bought = fd_bought(buyer)
  if bought + qty > s.limit then
    return {r = 'limit_exceeded', bought = bought, limit = s.limit}
  end
  local waiting = fd_waiting(s)
  if waiting > 0 or s.available < qty then
    return {r = 'sold_out', available = s.available, waiting = waiting}
  end
  local expires = fd_take_hold(s, buyer, bought, qty, rid, now)
  if idem_ttl > 0 then redis.call('SET', K.idem, rid, 'EX', idem_ttl) end
  fd_use_admission(s, buyer)
  fd_emit(s, 'reserved', now, {rid = rid, user = buyer, qty = qty})
  return {r = 'created', expires = expires}
end)
