-- lobby_read: where a buyer stands in a sale's lobby, and its figures.
-- Reads only.
-- KEYS: sale lobby lobbyin admitted
-- ARGV[1] buyer
-- Replies (r): missing | place {state: waiting | admitted | used | lapsed
--   | none, rank (0-based, while waiting), deadline, admitted_at,
--   joined_at, late, started, final, length, admitted_count, joined,
--   rate, now}
return fd_with_sale(function(s, now)
  local buyer = ARGV[1]
  local c = redis.call('HMGET', K.sale, 'lobby_admitted', 'lobby_joined')
  local reply = {r = 'place', state = 'none', started = now >= s.starts,
    final = fd_lobby_final(s, now), length = redis.call('ZCARD', K.lobby),
    admitted_count = fd_num(c[1]), joined = fd_num(c[2]),
    rate = s.admit_rate, now = now}
  local waiting = redis.call('HGET', K.lobbyin, buyer)
  if waiting then
    local joined, member = string.match(waiting, '^(%d+) (.*)$')
    reply.state = 'waiting'
    reply.joined_at = tonumber(joined)
    reply.late = string.sub(member, 1, 1) == '1'
    reply.rank = redis.call('ZRANK', K.lobby, member)
    return reply
  end
  local v = redis.call('HGET', K.admitted, buyer)
  if v then
    local state, deadline, at, joined = string.match(v, '^(%a) (%d+) (%d+) (%d+)')
    reply.state = ({d = 'admitted', u = 'used', l = 'lapsed'})[state]
    reply.deadline = tonumber(deadline)
    reply.admitted_at = tonumber(at)
    reply.joined_at = tonumber(joined)
  end
  return reply
end)
