-- repair_hold: MongoDB refused a hold's order by a unique index, so Redis
-- had lost part of the truth (units MongoDB already counts as sold, or the
-- buyer's earlier purchases). Units MongoDB has sold are counted sold, the
-- rest of the hold goes back to stock, the hold ends cancelled, and the
-- buyer's bought count is set from MongoDB.
-- Bound: O(the hold's units and ARGV[3]), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2] rid
-- ARGV[3] serials sold elsewhere (comma list)
-- ARGV[4] the buyer's bought count in MongoDB
-- Replies (r): repaired {lost} | missing | unchanged {state}
return fd_with_sale(function(s, now)
  local rid = ARGV[2]
  local h = fd_hold(rid)
  if not h then return {r = 'missing'} end
  if not fd_is_live(h) then return {r = 'unchanged', state = h.state} end
  local taken = {}
  for _, u in ipairs(fd_split(ARGV[3])) do taken[u] = true end
  local keep = {}
  local lost = 0
  for _, u in ipairs(fd_split(h.units)) do
    if taken[u] then lost = lost + 1 else keep[#keep + 1] = u end
  end
  -- Count the lost units as sold, then release the rest as a cancel.
  fd_update(s, {held = s.held - lost, sold = s.sold + lost})
  redis.call('HSET', K.bought, h.user, ARGV[4])
  h.qty = h.qty - lost
  h.units = table.concat(keep, ',')
  fd_release(s, rid, h, 'cancelled', now)
  return {r = 'repaired', lost = lost}
end)
