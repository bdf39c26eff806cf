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
--   fd:{S}:wait       zset   waiting buyers, scored by join ticket (FIFO)
--   fd:{S}:waitq      hash   waiting buyer -> units wanted
--   fd:{S}:promoted   hash   buyer -> reservation id made for them from the line
-- Published on the channel given in ARGV[1]: the same change as JSON.
-- Scripts declare the keys they name in KEYS; the helpers below also reach
-- keys built from the sale key's prefix, which share its hash tag and slot.

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
    'hold_ms', 'closed', 'next', 'available', 'held', 'sold', 'epoch',
    'waitlist', 'wl_closed')
  return {
    total = fd_num(v[1]), limit = fd_num(v[2]), starts = fd_num(v[3]),
    ends = fd_num(v[4]), hold_ms = fd_num(v[5]), closed = fd_num(v[6]),
    next = fd_num(v[7]), available = fd_num(v[8]), held = fd_num(v[9]),
    sold = fd_num(v[10]), epoch = v[11] or '', waitlist = fd_num(v[12]),
    wl_closed = fd_num(v[13]),
  }
end

local function fd_keys(sale_key)
  local p = fd_prefix(sale_key)
  return {
    sale = sale_key, free = p .. 'free', deadlines = p .. 'deadlines',
    bought = p .. 'bought', holding = p .. 'holding', events = p .. 'events',
    wait = p .. 'wait', waitq = p .. 'waitq', promoted = p .. 'promoted',
    hold = function(rid) return p .. 'hold:' .. rid end,
  }
end

-- Bump the sale's seq and announce the change with the counts after it.
-- extra: optional table of fields (kind-specific: rid, user, qty, ...).
local function fd_emit(sale_key, events_key, channel, kind, now, extra)
  local seq = redis.call('HINCRBY', sale_key, 'seq', 1)
  local s = fd_load_sale(sale_key)
  local waiting = 0
  if s.wl_closed ~= 1 then
    waiting = redis.call('ZCARD', fd_prefix(sale_key) .. 'wait')
  end
  local ev = {
    seq = seq, kind = kind, ts = now, available = s.available, held = s.held,
    sold = s.sold, total = s.total, status = fd_status(s, now),
    waitlist_length = waiting,
  }
  local fields = {'seq', seq, 'kind', kind, 'ts', now, 'available', s.available,
    'held', s.held, 'sold', s.sold, 'waitlist_length', waiting}
  if extra then
    for k, v in pairs(extra) do
      ev[k] = v
      fields[#fields + 1] = k
      fields[#fields + 1] = v
    end
  end
  -- Trimmed by the persister once the change is durable in MongoDB.
  redis.call('XADD', events_key, '*', unpack(fields))
  redis.call('PUBLISH', channel, cjson.encode(ev))
  return seq
end

local function fd_split(csv)
  local out = {}
  for part in string.gmatch(csv or '', '[^,]+') do out[#out + 1] = part end
  return out
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

-- Take `qty` units for `buyer` as a new hold `rid` (the caller checked the
-- window, the stock and the limit). Returned serials first, then
-- never-issued ones. Returns the deadline.
local function fd_take_hold(k, s, buyer, qty, rid, now)
  local bought = fd_num(redis.call('HGET', k.bought, buyer))
  local units = redis.call('SPOP', k.free, qty)
  local fresh = qty - #units
  for i = 0, fresh - 1 do units[#units + 1] = tostring(s.next + i) end
  if fresh > 0 then redis.call('HINCRBY', k.sale, 'next', fresh) end
  local slots = {}
  for i = 1, qty do slots[i] = tostring(bought + i) end
  local expires = now + s.hold_ms
  redis.call('HSET', k.hold(rid), 'user', buyer, 'qty', qty,
    'units', table.concat(units, ','), 'slots', table.concat(slots, ','),
    'state', 'held', 'created', now, 'expires', expires, 'epoch', s.epoch)
  redis.call('ZADD', k.deadlines, expires, rid)
  redis.call('HSET', k.holding, buyer, rid)
  redis.call('HINCRBY', k.sale, 'available', -qty)
  redis.call('HINCRBY', k.sale, 'held', qty)
  redis.call('HINCRBY', k.sale, 'holds_created', 1)
  return expires
end

-- A reservation id for a promoted buyer, of the same form as the API's
-- (`<sale id>-<24 hex>`): seconds, a marker no ObjectId counter part uses
-- here, and a per-sale sequence.
local function fd_promotion_id(sale_key, now)
  local n = redis.call('HINCRBY', sale_key, 'promotion_seq', 1)
  local sale_id = string.match(sale_key, '{(.-)}')
  return sale_id .. '-' .. string.format('%08x', math.floor(now / 1000)) ..
    'f0f0f0f0' .. string.format('%08x', n)
end

-- Hand free units to the head of the waiting list, in line order, in the
-- same step that freed them. Partial fits: the head is served whole; while
-- other holds are out (they may return more) units the head cannot use yet
-- stay set aside for the line. Once nothing is held, nothing more can come
-- back, so the head is offered what is free as a smaller hold. Closes the
-- line once every unit is sold.
local function fd_promote(sale_key, channel, now)
  local k = fd_keys(sale_key)
  local s = fd_load_sale(sale_key)
  while s.wl_closed ~= 1 and s.closed ~= 1 and now < s.ends and s.available > 0 do
    local head = redis.call('ZRANGE', k.wait, 0, 0)[1]
    if not head then break end
    local want = fd_num(redis.call('HGET', k.waitq, head))
    local room = s.limit - fd_num(redis.call('HGET', k.bought, head))
    if want > room then want = room end
    if want > s.available then
      if s.held > 0 then break end
      want = s.available
    end
    local ticket = tonumber(redis.call('ZSCORE', k.wait, head))
    redis.call('ZREM', k.wait, head)
    redis.call('HDEL', k.waitq, head)
    if want > 0 then
      local rid = fd_promotion_id(sale_key, now)
      local expires = fd_take_hold(k, s, head, want, rid, now)
      redis.call('HSET', k.promoted, head, rid)
      redis.call('HINCRBY', sale_key, 'promotions', 1)
      fd_emit(sale_key, k.events, channel, 'promoted', now,
        {rid = rid, user = head, qty = want, expires = expires, ticket = ticket})
    else
      fd_emit(sale_key, k.events, channel, 'waitlist_left', now, {user = head, ticket = ticket})
    end
    s = fd_load_sale(sale_key)
  end
  if s.wl_closed ~= 1 and s.sold >= s.total and s.held == 0 then
    redis.call('HSET', sale_key, 'wl_closed', 1)
    fd_emit(sale_key, k.events, channel, 'sale_closed', now)
  end
end

-- End a held (or confirming) hold in `final_state` (cancelled | expired),
-- give its units back, announce it, then let the line take them first.
-- The caller has checked the state.
local function fd_release(sale_key, rid, h, final_state, channel, now)
  local k = fd_keys(sale_key)
  local units = fd_split(h.units)
  if #units > 0 then redis.call('SADD', k.free, unpack(units)) end
  local qty = fd_num(h.qty)
  redis.call('HINCRBY', sale_key, 'available', qty)
  redis.call('HINCRBY', sale_key, 'held', -qty)
  redis.call('HINCRBY', sale_key, 'holds_' .. final_state, 1)
  if redis.call('HGET', k.holding, h.user) == rid then
    redis.call('HDEL', k.holding, h.user)
  end
  redis.call('ZREM', k.deadlines, rid)
  redis.call('HSET', k.hold(rid), 'state', final_state)
  redis.call('EXPIRE', k.hold(rid), FD_TERMINAL_TTL)
  fd_emit(sale_key, k.events, channel, final_state, now,
    {rid = rid, user = h.user, qty = qty})
  fd_promote(sale_key, channel, now)
end
