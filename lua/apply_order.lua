-- apply_order: an order is durable in MongoDB but Redis does not hold its
-- hold live: Redis was rebuilt from MongoDB before the order landed, or
-- lost the hold. The order, being durable, wins: each of its units is
-- taken from wherever Redis has it now, the units count as sold and the
-- buyer's purchase as bought, and the hold is recorded confirmed.
-- Where a unit is: free (taken from the free set), never issued (at or
-- above `next`: it joins `taken`, which issuing skips), or reclaimed
-- already (in `taken` below `next`: counted sold by reclaim_units). A unit
-- another live hold has makes the call change nothing and list it
-- (`contested`): the caller reclaims it with reclaim_units and calls
-- again.
-- An order cancelled and returned in this copy (`returned`) is not
-- counted: a caller that read it before the cancel comes late, and its
-- units are back already.
-- Bound: O(units of the order, at most 1000), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted returned
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] buyer
-- ARGV[4] the order's units (comma list)
-- Replies (r): applied | already | returned | missing | contested {units}
return fd_with_sale(function(s, now)
  local rid, buyer = ARGV[2], ARGV[3]
  if redis.call('HEXISTS', K.returned, rid) == 1 then return {r = 'returned'} end
  local h = fd_hold(rid)
  if h and h.state == 'confirmed' then return {r = 'already'} end
  if fd_is_live(h) then
    fd_confirm_hold(s, rid, h, now)
    fd_promote(s, now)
    return {r = 'applied'}
  end
  local units = fd_split(ARGV[4])
  -- First find every unit, changing nothing.
  local taken = redis.call('SMISMEMBER', K.taken, unpack(units))
  local free = redis.call('SMISMEMBER', K.free, unpack(units))
  local where, contested = {}, {}
  for i, u in ipairs(units) do
    if tonumber(u) >= s.next then
      where[u] = taken[i] == 1 and 'counted' or 'fresh'
    elseif taken[i] == 1 then
      where[u] = 'reclaimed'
    elseif free[i] == 1 then
      where[u] = 'free'
    else
      contested[#contested + 1] = u
    end
  end
  if #contested > 0 then return {r = 'contested', units = contested} end
  -- Then count each unit sold.
  local fresh, freed, reclaimed = {}, {}, {}
  for _, u in ipairs(units) do
    local from = where[u]
    if from == 'fresh' then fresh[#fresh + 1] = u
    elseif from == 'free' then freed[#freed + 1] = u
    elseif from == 'reclaimed' then reclaimed[#reclaimed + 1] = u end
  end
  if #fresh > 0 then redis.call('SADD', K.taken, unpack(fresh)) end
  if #freed > 0 then redis.call('SREM', K.free, unpack(freed)) end
  if #reclaimed > 0 then redis.call('SREM', K.taken, unpack(reclaimed)) end
  local counted = #fresh + #freed
  fd_update(s, {taken_n = s.taken_n + #fresh, available = s.available - counted,
    sold = s.sold + counted, holds_confirmed = s.holds_confirmed + 1})
  redis.call('HINCRBY', K.bought, buyer, #units)
  local record = h or {user = buyer, qty = #units, units = ARGV[4], slots = '',
    created = now, expires = now}
  fd_end_hold(rid, record, 'confirmed', now)
  fd_emit(s, 'confirmed', now, {rid = rid, user = buyer, qty = #units})
  fd_promote(s, now)
  return {r = 'applied'}
end)
