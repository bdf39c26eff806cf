-- lobby_tick: lapses admissions not used in time (each lapse frees a turn),
-- then, from the start, admits buyers from the head of the lobby at the
-- sale's rate. The credit of turns lives in the sale hash (in thousandths
-- of a turn, capped at one second's worth), so any number of instances
-- calling this about ten times a second together admit at the rate.
-- Publishes the lobby's figures when they change, at most once a second,
-- and at once when the lobby learns the sale is sold out for good.
-- KEYS: sale lobby lobbyin admitted admitdue
-- ARGV[1] publish command and channel  ARGV[2] most buyers one call admits,
-- and most admissions it lapses
-- Replies (r): missing | none (no lobby) | ok {admitted = [buyers],
--   lapsed = [buyers] (both absent when empty), deadline, now}
return fd_with_sale(function(s, now)
  if s.admit_rate <= 0 then return {r = 'none'} end
  local most = tonumber(ARGV[2])
  local lapsed = redis.call('ZRANGEBYSCORE', K.admitdue, '-inf', now,
    'LIMIT', 0, most)
  for _, buyer in ipairs(lapsed) do
    local v = redis.call('HGET', K.admitted, buyer) or 'd'
    redis.call('HSET', K.admitted, buyer, 'l' .. string.sub(v, 2))
    redis.call('ZREM', K.admitdue, buyer)
  end
  local c = redis.call('HMGET', K.sale, 'lobby_credit', 'lobby_at',
    'lobby_admitted', 'lobby_lapsed', 'lobby_pub', 'lobby_pub_at')
  local credit, at, count = fd_num(c[1]), fd_num(c[2]), fd_num(c[3])
  local final = fd_lobby_final(s, now)
  local admitted, deadline = {}, now + s.admit_ms
  if now >= s.starts and not final then
    if at < s.starts then at = s.starts end
    credit = math.min(s.admit_rate * 1000, credit + (now - at) * s.admit_rate)
      + #lapsed * 1000
    local n = math.min(math.floor(credit / 1000), most)
    if n > 0 then
      local popped = redis.call('ZPOPMIN', K.lobby, n)
      for i = 1, #popped, 2 do
        local buyer = string.match(popped[i], '^%d:[^:]*:(.*)$')
        local joined = string.match(
          redis.call('HGET', K.lobbyin, buyer) or '0', '^(%d+)')
        redis.call('HDEL', K.lobbyin, buyer)
        redis.call('HSET', K.admitted, buyer,
          'd ' .. deadline .. ' ' .. now .. ' ' .. joined)
        redis.call('ZADD', K.admitdue, deadline, buyer)
        admitted[#admitted + 1] = buyer
      end
      credit = credit - #admitted * 1000
      count = count + #admitted
    end
    at = now
  end
  local length = redis.call('ZCARD', K.lobby)
  local figures = length .. ' ' .. count .. ' ' .. (now >= s.starts and 1 or 0)
    .. ' ' .. (final and 1 or 0)
  local told_final = string.match(c[5] or '', ' 1$') ~= nil
  if figures ~= c[5] and (now - fd_num(c[6]) >= 1000 or (final and not told_final)) then
    fd_publish(ARGV[1], {type = 'lobby', lobby_length = length,
      admitted = count, sold_out = final, started = now >= s.starts,
      epoch = s.epoch, ts = now})
    redis.call('HSET', K.sale, 'lobby_pub', figures, 'lobby_pub_at', now)
  end
  redis.call('HSET', K.sale, 'lobby_credit', credit, 'lobby_at', at,
    'lobby_admitted', count, 'lobby_lapsed', fd_num(c[4]) + #lapsed)
  local reply = {r = 'ok', deadline = deadline, now = now}
  if #admitted > 0 then reply.admitted = admitted end
  if #lapsed > 0 then reply.lapsed = lapsed end
  return reply
end)
