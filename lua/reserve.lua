-- reserve: take units for buyers of one sale, each as one hold with a
-- deadline. The reserves an instance received together come in one call
-- (a reserve batch) and are served in order, each answered as if it had
-- come alone. While people wait in line, nobody else may reserve: units
-- coming back belong to them. On a lobby sale a buyer needs a live
-- admission (checked here, in the same step that takes the units); the
-- first hold uses it.
-- Bound: O(reserves + units): at most 25 reserves, of at most 1000 units in
-- all.
-- KEYS: sale holds deadlines free taken bought holding events wait admitted
--   admitdue lobbylog, and idem when a reserve carries an idempotency key
--   (at most one per call)
-- ARGV[1] publish command and channel  ARGV[2] idempotency key lifetime in
--   seconds; then four per reserve: rid, buyer, quantity, and 1 when the
--   idem key is this reserve's (0 otherwise)
-- Replies (r): missing (the sale is not in Redis) | done {holds: one per
-- reserve, in order:
--   created {expires}                a new hold (its first hold uses the
--                                    buyer's lobby admission)
--   existing {rid, repeat_key}       the buyer's live hold (or the hold an
--                                    earlier request with the same
--                                    idempotency key created)
--   upcoming | ended                 outside the window
--   not_admitted                     a lobby sale, and the buyer has no
--                                    live admission
--   limit_exceeded {bought, limit}
--   sold_out {available, waiting}    waiting > 0: people are in line}
local function reserve_one(s, now, rid, buyer, qty, keyed)
  if keyed then
    local earlier = redis.call('GET', K.idem)
    if earlier then return {r = 'existing', rid = earlier, repeat_key = true} end
  end
  local outside = fd_outside_window(s, now)
  if outside then return {r = outside} end
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
  if keyed then redis.call('SET', K.idem, rid, 'EX', tonumber(ARGV[2])) end
  fd_use_admission(s, buyer)
  fd_emit(s, 'reserved', now, {rid = rid, user = buyer, qty = qty})
  return {r = 'created', expires = expires}
end

return fd_with_sale(function(s, now)
  local holds = {}
  for i = 3, #ARGV, 4 do
    holds[#holds + 1] = reserve_one(s, now, ARGV[i], ARGV[i + 1],
      tonumber(ARGV[i + 2]), ARGV[i + 3] == '1')
  end
  return {r = 'done', holds = holds}
end)
