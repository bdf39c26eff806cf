-- lobby_tick: the lobby's heartbeat, on this Redis' clock. From the start
-- it first has the draw made: it hands one caller at a time a lease to
-- freeze the draw and load it (lobby_draw.lua), and lets nobody in until
-- the draw is loaded. Then it lapses admissions not used in time (each
-- lapse frees a turn) and admits buyers from the head of the lobby at the
-- sale's rate. The credit of turns lives in the sale hash (in thousandths
-- of a turn, capped at one second's worth), so any number of instances
-- calling this about ten times a second together admit at the rate. Every
-- admission and lapse is appended to the lobby's log, which the recorder
-- copies into MongoDB. Publishes the lobby's figures when they change, at
-- most once a second, and at once when the lobby learns the sale is sold
-- out for good.
-- Bound: ARGV[2] lapses and ARGV[2] admissions, each O(log lobby).
-- KEYS: sale early lobby lobbyin admitted admitdue lobbylog
-- ARGV[1] publish command and channel  ARGV[2] most buyers one call admits,
-- and most admissions it lapses  ARGV[3] a token for the draw's lease
-- ARGV[4] how long that lease lasts (ms)
-- Replies (r): missing | none (no lobby) | draw {token} (the caller has the
--   lease: make the draw now) | ok {admitted = [buyers], lapsed = [buyers]
--   (both absent when empty), deadline, now, more (the call admitted or
--   lapsed all it may: call again)}
return fd_with_sale(function(s, now)
  if s.admit_rate <= 0 then return {r = 'none'} end
  local most = tonumber(ARGV[2])
  local lapsed = redis.call('ZRANGEBYSCORE', K.admitdue, '-inf', now,
    'LIMIT', 0, most)
  for _, buyer in ipairs(lapsed) do
    local v = redis.call('HGET', K.admitted, buyer) or 'd'
    redis.call('HSET', K.admitted, buyer, 'l' .. string.sub(v, 2))
    redis.call('ZREM', K.admitdue, buyer)
    fd_lobby_log('l', buyer)
  end
  local c = redis.call('HMGET', K.sale, 'lobby_credit', 'lobby_at',
    'lobby_admitted', 'lobby_lapsed', 'lobby_pub', 'lobby_pub_at', 'draw_lease')
  local credit, at, count = fd_num(c[1]), fd_num(c[2]), fd_num(c[3])
  local final = fd_lobby_final(s, now)
  local admitted, deadline = {}, now + s.admit_ms
  local reply = {r = 'ok', deadline = deadline, now = now}
  if now >= s.starts and s.drawn ~= 1 then
    local until_ms = tonumber(string.match(c[7] or '', ' (%d+)$') or '0')
    if until_ms <= now then
      redis.call('HSET', K.sale, 'draw_lease', ARGV[3] .. ' ' .. (now + tonumber(ARGV[4])))
      reply = {r = 'draw', token = ARGV[3]}
    end
  elseif now >= s.starts and not final then
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
        fd_lobby_log('a', buyer, now, deadline)
        admitted[#admitted + 1] = buyer
      end
      credit = credit - #admitted * 1000
      count = count + #admitted
    end
    at = now
  end
  local length = redis.call('ZCARD', K.lobby) + redis.call('HLEN', K.early)
  local figures = length .. ' ' .. count .. ' ' .. s.drawn .. ' ' .. (final and 1 or 0)
  local told_final = string.match(c[5] or '', ' 1$') ~= nil
  if figures ~= c[5] and (now - fd_num(c[6]) >= 1000 or (final and not told_final)) then
    fd_publish(ARGV[1], {type = 'lobby', lobby_length = length,
      admitted = count, sold_out = final, started = s.drawn == 1,
      epoch = s.epoch, ts = now})
    redis.call('HSET', K.sale, 'lobby_pub', figures, 'lobby_pub_at', now)
  end
  redis.call('HSET', K.sale, 'lobby_credit', credit, 'lobby_at', at,
    'lobby_admitted', count, 'lobby_lapsed', fd_num(c[4]) + #lapsed)
  if reply.r == 'ok' then
    if #admitted > 0 then reply.admitted = admitted end
    if #lapsed > 0 then reply.lapsed = lapsed end
    reply.more = #admitted == most or #lapsed == most
  end
  return reply
end)
