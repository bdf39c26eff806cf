-- quota: spend one request of a buyer's write budget, one budget shared by
-- every instance (GCRA, the generic cell rate algorithm: the key holds the
-- time the buyer's budget is next full, and a request is allowed while that
-- is at most `burst` intervals ahead).
-- Bound: O(1).
-- KEYS: quota
-- ARGV[1] interval between requests at the sustained rate (ms)
-- ARGV[2] burst (requests)
-- Replies (r): ok | limited {retry_ms}
local now = fd_now()
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local full_at = math.max(tonumber(redis.call('GET', K.quota)) or now, now)
local next_full = full_at + interval
local ahead = next_full - now
if ahead > interval * burst then
  return fd_reply({r = 'limited', retry_ms = ahead - interval * burst})
end
redis.call('SET', K.quota, next_full, 'PX', math.max(1, math.ceil(ahead)))
return fd_reply({r = 'ok'})
