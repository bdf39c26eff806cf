-- Shared prelude, prepended to every script in this folder at load time.
-- It owns the pieces each transition repeats: the clock, the live status of a
-- sale, returning a hold's units, and announcing a change (stream + pub/sub).
--
-- Key layout of one sale (all keys share the hash tag {<sale_id>}):
--   fd:{S}:sale       hash   total limit starts ends hold_ms closed next
--                            available held sold seq epoch price currency
--                            holds_created holds_confirmed holds_cancelled
--                            holds_expired
--   fd:{S}:free       set    serials given back (never-issued serials are
--                            next..total, so opening a sale is O(1))
--   fd:{S}:deadlines  zset   reservation id -> deadline or lease end (ms)
--   fd:{S}:bought     hash   buyer -> units bought
--   fd:{S}:holding    hash   buyer -> their one live reservation id
--   fd:{S}:hold:<rid> hash   buyer qty units slots state created expires
--                            lease epoch
--   fd:{S}:events     stream every change, in seq order
-- Published on the channel given in ARGV[1]: the same change as JSON.

local FD_TERMINAL_TTL = 86400

local function fd_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The key prefix `fd:{S}:` taken from the sale key `fd:{S}:sale`.
local function fd_prefix(sale_key)
  return string.sub(sale_key, 1, -5)
end

local function fd_num(v)
  return tonumber(v) or 0
end

local function fd_status(s, now)
  if fd_num(s.closed) == 1 or now >= fd_num(s.ends) then return 'ended' end
  if now < fd_num(s.starts) then return 'upcoming' end
  if fd_num(s.available) == 0 then return 'sold_out' end
  return 'active'
end

local function fd_load_sale(sale_key)
  local v = redis.call('HMGET', sale_key, 'total', 'limit', 'starts', 'ends',
    'hold_ms', 'closed', 'next', 'available', 'held', 'sold', 'epoch')
  return {
    total = fd_num(v[1]), limit = fd_num(v[2]), starts = fd_num(v[3]),
    ends = fd_num(v[4]), hold_ms = fd_num(v[5]), closed = fd_num(v[6]),
    next = fd_num(v[7]), available = fd_num(v[8]), held = fd_num(v[9]),
    sold = fd_num(v[10]), epoch = v[11] or '',
  }
end

-- Bump the sale's seq and announce the change with the counts after it.
-- extra: optional table of fields (kind-specific: rid, user, qty, ...).
local function fd_emit(sale_key, events_key, channel, kind, now, extra)
  local seq = redis.call('HINCRBY', sale_key, 'seq', 1)
  local s = fd_load_sale(sale_key)
  local ev = {
    seq = seq, kind = kind, ts = now, available = s.available, held = s.held,
    sold = s.sold, total = s.total, status = fd_status(s, now),
  }
  local fields = {'seq', seq, 'kind', kind, 'ts', now, 'available', s.available,
    'held', s.held, 'sold', s.sold}
  if extra then
    for k, v in pairs(extra) do
      ev[k] = v
      fields[#fields + 1] = k
      fields[#fields + 1] = v
    end
  end
  redis.call('XADD', events_key, 'MAXLEN', '~', 100000, '*', unpack(fields))
  redis.call('PUBLISH', channel, cjson.encode(ev))
  return seq
end

local function fd_split(csv)
  local out = {}
  for part in string.gmatch(csv or '', '[^,]+') do out[#out + 1] = part end
  return out
end

-- Give a held (or confirming) hold's units back to open stock and end it in
-- `final_state`. The caller has checked the state.
local function fd_release(sale_key, hold_key, rid, h, final_state, keys)
  local units = fd_split(h.units)
  if #units > 0 then redis.call('SADD', keys.free, unpack(units)) end
  local qty = fd_num(h.qty)
  redis.call('HINCRBY', sale_key, 'available', qty)
  redis.call('HINCRBY', sale_key, 'held', -qty)
  redis.call('HINCRBY', sale_key, 'holds_' .. final_state, 1)
  if redis.call('HGET', keys.holding, h.user) == rid then
    redis.call('HDEL', keys.holding, h.user)
  end
  redis.call('ZREM', keys.deadlines, rid)
  redis.call('HSET', hold_key, 'state', final_state)
  redis.call('EXPIRE', hold_key, FD_TERMINAL_TTL)
end

local function fd_load_hold(hold_key)
  local v = redis.call('HMGET', hold_key, 'user', 'qty', 'units', 'slots',
    'state', 'expires', 'epoch', 'created')
  if not v[5] then return nil end
  return {
    user = v[1], qty = fd_num(v[2]), units = v[3], slots = v[4], state = v[5],
    expires = fd_num(v[6]), epoch = v[7] or '', created = fd_num(v[8]),
  }
end

local function fd_reply(t)
  return cjson.encode(t)
end
