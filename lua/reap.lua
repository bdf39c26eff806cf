-- reap: expire due holds (their units go to the waiting list first), claim
-- confirming holds whose lease ran out, prune holds that ended more than a
-- while ago, promote on where an earlier call ran out of promotions, and
-- close the line when the sale ends. Safe when several instances reap at
-- once: each due hold is handled once because its state changes in this
-- same atomic step.
-- Bound: ARGV[2] due holds (each O(its units, at most 1000)), ARGV[2]
-- pruned holds, FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted
-- ARGV[1] publish command and channel  ARGV[2] most holds to handle
-- ARGV[3] claim lease (ms)  ARGV[4] how long an ended hold stays readable (ms)
-- Replies (r): missing | ok {expired, claimed: [rid], next (ms or -1), now,
-- more (a batch was full, or promotions are left: call again)}
return fd_with_sale(function(s, now)
  local batch = tonumber(ARGV[2])
  local due = redis.call('ZRANGEBYSCORE', K.deadlines, '-inf', now, 'LIMIT', 0, batch)
  local expired = 0
  local claimed = {}
  for _, rid in ipairs(due) do
    local h = fd_hold(rid)
    if fd_is_waiting(h) then
      fd_release(s, rid, h, 'expired', now)
      expired = expired + 1
    elseif h and h.state == 'confirming' then
      h.lease = now + tonumber(ARGV[3])
      fd_put_hold(rid, h)
      redis.call('ZADD', K.deadlines, h.lease, rid)
      claimed[#claimed + 1] = rid
    else
      redis.call('ZREM', K.deadlines, rid)
    end
  end
  local old = redis.call('ZRANGEBYSCORE', K.ended, '-inf', now - tonumber(ARGV[4]),
    'LIMIT', 0, batch)
  if #old > 0 then
    redis.call('HDEL', K.holds, unpack(old))
    redis.call('ZREM', K.ended, unpack(old))
  end
  -- Units an earlier call set aside for the line when it ran out of
  -- promotions.
  fd_promote(s, now)
  -- The end of the window closes the waiting list, once.
  if fd_outside_window(s, now) == 'ended' and s.wl_closed ~= 1 then
    fd_update(s, {wl_closed = 1})
    fd_emit(s, 'sale_closed', now)
  end
  local first = redis.call('ZRANGE', K.deadlines, 0, 0, 'WITHSCORES')
  local out = {r = 'ok', expired = expired, next = -1, now = now,
    more = #due == batch or #old == batch or fd_more(s, now)}
  if first[2] then out.next = tonumber(first[2]) end
  if #claimed > 0 then out.claimed = claimed end
  return out
end)
