-- waitlist_leave: a buyer leaves the line. The next in line may then fit the
-- units set aside for the head, so promotion runs in the same step.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:wait  KEYS[3] fd:{S}:waitq
-- KEYS[4] fd:{S}:events
-- ARGV[1] channel  ARGV[2] buyer
-- Returns JSON, r is one of: left, not_listed, missing.
local now = fd_now()
if redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
local buyer = ARGV[2]
local ticket = redis.call('ZSCORE', KEYS[2], buyer)
if not ticket then return fd_reply({r = 'not_listed'}) end
redis.call('ZREM', KEYS[2], buyer)
redis.call('HDEL', KEYS[3], buyer)
fd_emit(KEYS[1], KEYS[4], ARGV[1], 'waitlist_left', now, {user = buyer, ticket = tonumber(ticket)})
fd_promote(KEYS[1], ARGV[1], now)
return fd_reply({r = 'left'})
