-- repair_hold: MongoDB refused a hold's order by a unique index, so Redis had
-- lost part of the truth (units MongoDB already counts as sold, or the
-- buyer's earlier purchases). Units MongoDB has sold are counted sold, the
-- rest of the hold goes back to stock, the hold ends cancelled, and the
-- buyer's bought count is set from MongoDB.
-- KEYS[1] fd:{S}:sale  KEYS[2] fd:{S}:hold:<rid>  KEYS[3] fd:{S}:deadlines
-- KEYS[4] fd:{S}:free  KEYS[5] fd:{S}:holding  KEYS[6] fd:{S}:bought
-- KEYS[7] fd:{S}:events
-- ARGV[1] channel  ARGV[2] rid  ARGV[3] serials sold elsewhere (comma list)
-- ARGV[4] the buyer's bought count in MongoDB
-- Returns JSON, r is one of: repaired, missing, unchanged {state}.
local now = fd_now()
local h = fd_load_hold(KEYS[2])
if not h or redis.call('EXISTS', KEYS[1]) == 0 then return fd_reply({r = 'missing'}) end
if h.state ~= 'confirming' and h.state ~= 'held' then
  return fd_reply({r = 'unchanged', state = h.state})
end
local taken = {}
for _, u in ipairs(fd_split(ARGV[3])) do taken[u] = true end
local keep = {}
local lost = 0
for _, u in ipairs(fd_split(h.units)) do
  if taken[u] then lost = lost + 1 else keep[#keep + 1] = u end
end
-- Count the lost units as sold, then release the rest as a normal cancel.
redis.call('HINCRBY', KEYS[1], 'held', -lost)
redis.call('HINCRBY', KEYS[1], 'sold', lost)
redis.call('HSET', KEYS[6], h.user, ARGV[4])
h.qty = h.qty - lost
h.units = table.concat(keep, ',')
fd_release(KEYS[1], ARGV[2], h, 'cancelled', ARGV[1], now)
return fd_reply({r = 'repaired', lost = lost})
