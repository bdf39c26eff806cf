-- lobby_draw: loads the frozen draw into the lobby, a chunk a call, while
-- the caller holds the lease lobby_tick gave it (a rebuild, or a lease
-- that ran out and went to another caller, makes the call `lost` and
-- changes nothing). `place`: each (buyer, member) leaves the early set for
-- its place in the draw. `late`: early buyers the draw does not hold (a
-- rebuild raced the start) queue as latecomers. `done`: the draw is
-- loaded and admission may begin; refused while early buyers are left.
-- Bound: O(triples x log lobby); callers send at most 250.
-- KEYS: sale early lobby lobbyin admitted
-- ARGV[1] publish command and channel  ARGV[2] lease token
-- ARGV[3] place | late | done  ARGV[4..] place and late: buyer, member,
-- joined ms triples; done: the draw's length
-- Replies (r): missing | lost | loaded {n} | done | left {n} (early buyers
--   still unplaced)
return fd_with_sale(function(s, now)
  local lease = redis.call('HGET', K.sale, 'draw_lease') or ''
  if s.drawn == 1 or string.match(lease, '^(%S+)') ~= ARGV[2] then
    return {r = 'lost'}
  end
  if ARGV[3] == 'done' then
    local left = redis.call('HLEN', K.early)
    if left > 0 then return {r = 'left', n = left} end
    fd_update(s, {drawn = 1, draw_count = tonumber(ARGV[4])})
    redis.call('HDEL', K.sale, 'draw_lease')
    fd_publish(ARGV[1], {type = 'lobby', lobby_length = redis.call('ZCARD', K.lobby),
      admitted = fd_num(redis.call('HGET', K.sale, 'lobby_admitted')),
      sold_out = fd_lobby_final(s, now), started = true, epoch = s.epoch, ts = now})
    return {r = 'done'}
  end
  local n = 0
  for i = 4, #ARGV - 2, 3 do
    local buyer, member, joined = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('HEXISTS', K.admitted, buyer) == 0 then
      redis.call('HDEL', K.early, buyer)
      redis.call('ZADD', K.lobby, 0, member)
      redis.call('HSET', K.lobbyin, buyer, joined .. ' ' .. member)
      n = n + 1
    end
  end
  return {r = 'loaded', n = n}
end)
