-- apply_order: an order is durable in MongoDB but Redis does not hold its
-- hold live: Redis was rebuilt from MongoDB before the order landed, or
-- lost the hold. The order, being durable, wins: each of its units is
-- taken from wherever Redis has it now (the free set, the never-issued
-- range, or another buyer's live hold, which shrinks and ends cancelled
-- when nothing is left), the units count as sold and the buyer's purchase
-- as bought, and the hold is recorded confirmed.
-- KEYS: sale holds deadlines ended free bought holding events wait waitq
--   promoted
-- ARGV[1] publish command and channel  ARGV[2] rid  ARGV[3] buyer
-- ARGV[4] the order's units (comma list)
-- Replies (r): applied {from_holds} | already | missing
return fd_with_sale(function(s, now)
  local rid, buyer = ARGV[2], ARGV[3]
  local h = fd_hold(rid)
  if h and h.state == 'confirmed' then return {r = 'already'} end
  if fd_is_live(h) then
    fd_confirm_hold(s, rid, h, now)
    fd_promote(s, now)
    return {r = 'applied', from_holds = 0}
  end
  local units = fd_split(ARGV[4])
  local free_taken, from_holds = 0, 0
  local holders = nil
  for _, u in ipairs(units) do
    local serial = tonumber(u)
    if serial >= s.next then
      -- Serials between the rebuilt counter and this one come free.
      local gap = {}
      for m = s.next, serial - 1 do
        gap[#gap + 1] = m
        if #gap == 1000 then redis.call('SADD', K.free, unpack(gap)); gap = {} end
      end
      if #gap > 0 then redis.call('SADD', K.free, unpack(gap)) end
      -- (they were counted available as never issued, and still are).
      fd_update(s, {next = serial + 1})
      free_taken = free_taken + 1
    elseif redis.call('SREM', K.free, u) == 1 then
      free_taken = free_taken + 1
    else
      -- Another live hold has it: that hold gives it up.
      if not holders then holders = redis.call('HVALS', K.holding) end
      for _, other in ipairs(holders) do
        local oh = fd_hold(other)
        if fd_is_live(oh) then
          local kept, found = {}, false
          for _, v in ipairs(fd_split(oh.units)) do
            if v == u and not found then found = true else kept[#kept + 1] = v end
          end
          if found then
            local slots = fd_split(oh.slots)
            slots[#slots] = nil
            oh.units, oh.slots, oh.qty = table.concat(kept, ','), table.concat(slots, ','), oh.qty - 1
            fd_update(s, {held = s.held - 1})
            if oh.qty == 0 then
              redis.call('HINCRBY', K.sale, 'holds_cancelled', 1)
              fd_end_hold(other, oh, 'cancelled', now)
              fd_emit(s, 'cancelled', now, {rid = other, user = oh.user, qty = 0})
            else
              fd_put_hold(other, oh)
            end
            from_holds = from_holds + 1
            break
          end
        end
      end
    end
  end
  local qty = #units
  fd_update(s, {available = s.available - free_taken, sold = s.sold + qty})
  redis.call('HINCRBY', K.sale, 'holds_confirmed', 1)
  redis.call('HINCRBY', K.bought, buyer, qty)
  local record = h or {user = buyer, qty = qty, units = ARGV[4], slots = '', created = now,
    expires = now}
  fd_end_hold(rid, record, 'confirmed', now)
  fd_emit(s, 'confirmed', now, {rid = rid, user = buyer, qty = qty})
  fd_promote(s, now)
  return {r = 'applied', from_holds = from_holds}
end)
