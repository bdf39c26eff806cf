-- lobby_join: puts a buyer MongoDB has recorded into a sale's lobby, the
-- class decided here on this Redis' clock: before the start the buyer
-- joins the early set, which the draw orders at the start (nothing here
-- says where they will stand); from the start on they queue behind the
-- draw in the order of their join time (`1:<joined ms, 15 digits>:<buyer>`,
-- the format `lobby::late_member` builds in Rust for a rebuild). Repeats
-- change nothing. A join is published (`{lobby_joined = buyer}`) so the
-- buyer's open sockets learn of it.
-- Bound: O(log lobby).
-- KEYS: sale early lobby lobbyin admitted
-- ARGV[1] buyer  ARGV[2] joined at (ms, Redis clock, as MongoDB records it)
-- ARGV[3] publish command and channel
-- Replies (r): missing | none (no lobby) | not_open {opens} | ended |
--   place (as lobby_read) with joined_now = true the first time
return fd_with_sale(function(s, now)
  if s.admit_rate <= 0 then return {r = 'none'} end
  if now < s.opens then return {r = 'not_open', opens = s.opens} end
  local buyer = ARGV[1]
  local listed = redis.call('HEXISTS', K.early, buyer) == 1
    or redis.call('HEXISTS', K.lobbyin, buyer) == 1
    or redis.call('HEXISTS', K.admitted, buyer) == 1
  local joined = false
  if not listed then
    if fd_outside_window(s, now) == 'ended' then return {r = 'ended'} end
    if now < s.starts then
      redis.call('HSET', K.early, buyer, ARGV[2])
    else
      local member = string.format('1:%015d:%s', tonumber(ARGV[2]), buyer)
      redis.call('ZADD', K.lobby, 0, member)
      redis.call('HSET', K.lobbyin, buyer, ARGV[2] .. ' ' .. member)
    end
    redis.call('HINCRBY', K.sale, 'lobby_joined', 1)
    fd_publish(ARGV[3], {lobby_joined = buyer})
    joined = true
  end
  local place = fd_lobby_place(s, buyer, now)
  place.joined_now = joined
  return place
end)
