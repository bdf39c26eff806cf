-- lobby_join: puts a buyer MongoDB has recorded in a sale's lobby into
-- Redis, at their place: joiners before the start by their draw value,
-- latecomers behind them by join time. Repeats change nothing. A join
-- is published (`{lobby_joined = buyer}`) so the buyer's open sockets
-- learn of it.
-- KEYS: sale lobby lobbyin admitted
-- ARGV[1] buyer  ARGV[2] member of `lobby` (see src/store/keys.rs)
-- ARGV[3] joined at (ms)  ARGV[4] publish command and channel
-- Replies (r): joined | listed (already in) | missing
return fd_with_sale(function(s, now)
  local buyer = ARGV[1]
  if redis.call('HEXISTS', K.lobbyin, buyer) == 1
    or redis.call('HEXISTS', K.admitted, buyer) == 1 then
    return {r = 'listed'}
  end
  redis.call('ZADD', K.lobby, 0, ARGV[2])
  redis.call('HSET', K.lobbyin, buyer, ARGV[3] .. ' ' .. ARGV[2])
  redis.call('HINCRBY', K.sale, 'lobby_joined', 1)
  fd_publish(ARGV[4], {lobby_joined = buyer})
  return {r = 'joined'}
end)
