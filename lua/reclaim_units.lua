-- reclaim_units: units of a durable order that other live holds have
-- (Redis was rebuilt before the order landed, and the units went out
-- again) are taken back from those holds, a few holds a call: each hold
-- gives up its unit (and ends cancelled when it has none left), and the
-- unit is counted sold at once and kept in `taken`, where apply_order
-- finds it. The caller names each hold (it scans `holds` in chunks).
-- Bound: O(ARGV pairs x the units of each hold named, at most 1000);
-- callers name at most 25 holds.
-- KEYS: sale holds deadlines ended taken holding events wait
-- ARGV[1] publish command and channel  ARGV[2..] `<unit>=<rid>` pairs
-- Replies (r): missing | reclaimed {n, missed: [units no longer where
--   named] (absent when none)}
return fd_with_sale(function(s, now)
  local holds, missed, n = {}, {}, 0
  for i = 2, #ARGV do
    local unit, rid = string.match(ARGV[i], '^(%d+)=(.+)$')
    local h = rid and (holds[rid] or fd_hold(rid))
    local found = false
    if fd_is_live(h) then
      local kept = {}
      for _, v in ipairs(fd_split(h.units)) do
        if v == unit and not found then found = true else kept[#kept + 1] = v end
      end
      if found then
        local slots = fd_split(h.slots)
        slots[#slots] = nil
        h.units, h.slots, h.qty = table.concat(kept, ','), table.concat(slots, ','), h.qty - 1
        holds[rid] = h
        redis.call('SADD', K.taken, unit)
        n = n + 1
      end
    end
    if not found and unit then missed[#missed + 1] = unit end
  end
  for rid, h in pairs(holds) do
    if h.qty == 0 then
      redis.call('HINCRBY', K.sale, 'holds_cancelled', 1)
      fd_end_hold(rid, h, 'cancelled', now)
      fd_emit(s, 'cancelled', now, {rid = rid, user = h.user, qty = 0})
    else
      fd_put_hold(rid, h)
    end
  end
  if n > 0 then
    fd_update(s, {held = s.held - n, sold = s.sold + n})
    fd_emit(s, 'reclaimed', now, {qty = n})
  end
  local reply = {r = 'reclaimed', n = n}
  if #missed > 0 then reply.missed = missed end
  return reply
end)
