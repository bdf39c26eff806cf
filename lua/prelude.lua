-- Shared prelude, prepended to every script in this folder at load time. It
-- owns the rules the transitions share, each written once: the clock, the
-- sale's window and live status, a buyer's live hold and limit, taking and
-- returning units, promoting the waiting list, and announcing a change.
--
-- Keys. Every key a script touches arrives in KEYS; no key name is built
-- here. The layout is documented once, in src/store/keys.rs. K indexes the
-- keys by role, the word after the sale's hash tag (`fd:{S}:<role>[:...]`).
-- The loader (src/store/scripts/mod.rs) opens each script with K holding
-- the keys every call passes, in its declared order; the keys a caller
-- adds after them (from KEYS[FD_NAMED_FROM]) are found here by role.
-- Reaching for a role the caller did not declare raises an error instead
-- of touching a key Redis Cluster would not route here.
-- ARGV[1] of every script that changes a sale says how to announce the
-- change: the publish command and the sale's channel, `PUBLISH fd:{S}:live`
-- on a single node, `SPUBLISH fd:{S}:live` (the shard channel) on a cluster.
--
-- Bounds. No call does work that grows with the sale's stock, holds, line
-- or lobby: each script states its bound in its header, in terms of its
-- arguments and of FD_PROMOTIONS below. Work larger than that is done in
-- chunks over several calls.

for i, key in ipairs(KEYS) do
  if i >= FD_NAMED_FROM then
    local role = string.match(key, '}:([%w_]+)')
    if role then K[role] = key end
  end
end
setmetatable(K, {__index = function(_, role)
  error('flashdrop: key role ' .. tostring(role) .. ' was not declared in KEYS')
end})

-- Most buyers one call promotes from the waiting list. A call that had
-- more to promote leaves the rest set aside for the line (nobody else may
-- take it while people wait) and says so (`fd_more`); the reaper's next
-- call promotes on.
local FD_PROMOTIONS = 25
local fd_promotions_left = FD_PROMOTIONS

-- The sale's fields this call changed (see fd_update), written once at
-- its end.
local fd_dirty = {}

-- The line's length, counted at most once a call (every change announces
-- it): nil until counted, and again after the line changed, which it does
-- only through the two helpers that add to it and remove from it.
local fd_line_length = nil

local function fd_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fd_num(v)
  return tonumber(v) or 0
end

local function fd_reply(t)
  return cjson.encode(t)
end

-- The sale's live fields, or nil when Redis does not have the sale. The
-- epoch names this Redis copy of the sale: every rebuild makes a new one,
-- so a watcher can tell it must start over. A
-- script loads them once and changes them through fd_update, and in Redis
-- with fd_flush. Money stays a string: cjson would print
-- large numbers in exponent form.
local function fd_sale()
  local v = redis.call('HMGET', K.sale, 'total', 'limit', 'starts', 'ends',
    'hold_ms', 'closed', 'next', 'available', 'held', 'sold', 'waitlist',
    'wl_closed', 'price', 'currency', 'epoch', 'admit_rate', 'admit_ms',
    'opens', 'drawn', 'taken_n', 'pay_ms', 'seq', 'holds_created',
    'holds_confirmed')
  if not v[1] then return nil end
  return {
    total = fd_num(v[1]), limit = fd_num(v[2]), starts = fd_num(v[3]),
    ends = fd_num(v[4]), hold_ms = fd_num(v[5]), closed = fd_num(v[6]),
    next = fd_num(v[7]), available = fd_num(v[8]), held = fd_num(v[9]),
    sold = fd_num(v[10]), waitlist = fd_num(v[11]), wl_closed = fd_num(v[12]),
    price = v[13] or '0', currency = v[14] or '', epoch = v[15] or '',
    admit_rate = fd_num(v[16]), admit_ms = fd_num(v[17]), opens = fd_num(v[18]),
    drawn = fd_num(v[19]), taken_n = fd_num(v[20]), pay_ms = fd_num(v[21]),
    seq = fd_num(v[22]), holds_created = fd_num(v[23]),
    holds_confirmed = fd_num(v[24]),
  }
end

-- Sets fields of the sale in `s`; fd_flush writes them to Redis. A call
-- changes the sale's fields many times (each reserve of a batch, each
-- change's seq) and writes them once. Nothing else in a script writes a
-- field that passes through here, and nothing reads one from Redis after
-- changing it here: `s` is the call's copy.
local function fd_update(s, fields)
  for field, value in pairs(fields) do
    s[field] = value
    fd_dirty[field] = true
  end
end

-- Writes the fields fd_update changed since the last flush, in one HSET.
local function fd_flush(s)
  local args = {}
  for field in pairs(fd_dirty) do
    args[#args + 1] = field
    args[#args + 1] = s[field]
  end
  if #args > 0 then redis.call('HSET', K.sale, unpack(args)) end
  fd_dirty = {}
end

-- Runs `body(s, now)` on the sale, writes the fields it changed, and
-- encodes the table it returns; a sale Redis does not have answers
-- {r = 'missing'} (the caller rebuilds it). A body that fails still has
-- its changes to the sale written, as its other writes stay (Redis does
-- not undo a script's writes): the sale's counts stay with its holds.
local function fd_with_sale(body)
  local s = fd_sale()
  if not s then return fd_reply({r = 'missing'}) end
  local ok, reply = pcall(body, s, fd_now())
  fd_flush(s)
  if not ok then error(reply, 0) end
  return fd_reply(reply)
end

-- 'ended' or 'upcoming' outside the sale's window, nil inside it.
local function fd_outside_window(s, now)
  if s.closed == 1 or now >= s.ends then return 'ended' end
  if now < s.starts then return 'upcoming' end
  return nil
end

-- The status buyers see: upcoming, active, sold_out or ended.
local function fd_status(s, now)
  local outside = fd_outside_window(s, now)
  if outside then return outside end
  if s.available == 0 then return 'sold_out' end
  return 'active'
end

-- Whether the waiting list still takes and serves buyers.
local function fd_line_open(s, now)
  return s.wl_closed ~= 1 and fd_outside_window(s, now) ~= 'ended'
end

-- Buyers in line, as everyone sees it (a closed line is empty).
local function fd_waiting(s)
  if s.wl_closed == 1 then return 0 end
  if not fd_line_length then fd_line_length = redis.call('ZCARD', K.wait) end
  return fd_line_length
end

-- Puts `buyer` in line under `ticket`; the only way a script adds to it.
local function fd_line_add(ticket, buyer)
  redis.call('ZADD', K.wait, ticket, buyer)
  fd_line_length = nil
end

-- Takes `buyer` out of line; the only way a script removes from it.
local function fd_line_remove(buyer)
  redis.call('ZREM', K.wait, buyer)
  fd_line_length = nil
end

-- Whether nobody still waiting in the sale's lobby can be served any more:
-- the sale has ended, or every unit is sold for good (so the waiting list
-- is closed too).
local function fd_lobby_final(s, now)
  return fd_outside_window(s, now) == 'ended' or s.sold >= s.total
end

-- A lobby sale (admit_rate > 0) lets a buyer reserve or join the waiting
-- list only with a live admission: `admitted` has them as
-- `<state> <deadline> <admitted at> <joined at>`, state `d` (unused) or
-- `u` (used), before the deadline. Reads only.
local function fd_admitted(s, buyer, now)
  if s.admit_rate <= 0 then return true end
  local v = redis.call('HGET', K.admitted, buyer)
  if not v then return false end
  local state, deadline = string.match(v, '^(%a) (%d+)')
  return state ~= 'l' and now < tonumber(deadline)
end

-- Appends an admission (`a`, with when and until), a lapse (`l`) or a use
-- (`u`) to the lobby's log, which the recorder copies into MongoDB.
local function fd_lobby_log(kind, buyer, at, deadline)
  if at then
    redis.call('XADD', K.lobbylog, '*', 'k', kind, 'b', buyer, 't', at, 'd', deadline)
  else
    redis.call('XADD', K.lobbylog, '*', 'k', kind, 'b', buyer)
  end
end

-- The admission did its job (a hold or a place in line): it no longer
-- lapses, and the use is logged. True the first time.
local function fd_use_admission(s, buyer)
  if s.admit_rate <= 0 then return false end
  local v = redis.call('HGET', K.admitted, buyer)
  if not v or string.sub(v, 1, 1) ~= 'd' then return false end
  redis.call('HSET', K.admitted, buyer, 'u' .. string.sub(v, 2))
  redis.call('ZREM', K.admitdue, buyer)
  redis.call('HINCRBY', K.sale, 'lobby_used', 1)
  fd_lobby_log('u', buyer)
  return true
end

-- Where a buyer stands in a sale's lobby, with the lobby's figures, all
-- from Redis and its clock. state: waiting (in the lobby: with a rank once
-- the draw is loaded) | admitted | used | lapsed | none.
local function fd_lobby_place(s, buyer, now)
  local c = redis.call('HMGET', K.sale, 'lobby_admitted', 'lobby_joined', 'commit',
    'draw_count')
  local reply = {r = 'place', state = 'none', opened = now >= s.opens,
    started = now >= s.starts, drawn = s.drawn == 1,
    ended = fd_outside_window(s, now) == 'ended', final = fd_lobby_final(s, now),
    length = redis.call('ZCARD', K.lobby) + redis.call('HLEN', K.early),
    admitted_count = fd_num(c[1]), joined = fd_num(c[2]), draw_count = fd_num(c[4]),
    rate = s.admit_rate,
    admission_ms = s.admit_ms, opens = s.opens, now = now}
  if reply.opened then reply.commit = c[3] end
  local early = redis.call('HGET', K.early, buyer)
  if early then
    reply.state = 'waiting'
    reply.joined_at = tonumber(early)
    return reply
  end
  local waiting = redis.call('HGET', K.lobbyin, buyer)
  if waiting then
    local joined, member = string.match(waiting, '^(%d+) (.*)$')
    reply.state = 'waiting'
    reply.joined_at = tonumber(joined)
    reply.late = string.sub(member, 1, 1) == '1'
    if reply.drawn then reply.rank = redis.call('ZRANK', K.lobby, member) end
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
end

-- Holds live in one hash per sale, rid -> JSON {user, qty, units, slots,
-- state, created, expires, lease, payment}, so every script can name the
-- hash. A hold of a sale that takes payment is `paying` once its buyer
-- asked for a payment intent (`payment` is the intent's id).
local function fd_hold(rid)
  local raw = redis.call('HGET', K.holds, rid)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function fd_put_hold(rid, h)
  redis.call('HSET', K.holds, rid, cjson.encode(h))
end

local function fd_is_live(h)
  return h ~= nil and (h.state == 'held' or h.state == 'paying'
    or h.state == 'confirming')
end

-- Whether a live hold waits for its buyer (held, or paying), as opposed to
-- an order write (confirming): the deadline ends it.
local function fd_is_waiting(h)
  return h ~= nil and (h.state == 'held' or h.state == 'paying')
end

-- The buyer's one live hold of this sale: its rid and the hold, or nil.
local function fd_live_hold(buyer)
  local rid = redis.call('HGET', K.holding, buyer)
  if not rid then return nil end
  local h = fd_hold(rid)
  if fd_is_live(h) then return rid, h end
  return nil
end

local function fd_bought(buyer)
  return fd_num(redis.call('HGET', K.bought, buyer))
end

-- Publishes `message` as JSON; `target` is "<PUBLISH|SPUBLISH> <channel>",
-- as the caller passes it (sharded on Redis Cluster).
local function fd_publish(target, message)
  local publish, channel = string.match(target, '^(%u+) (.+)$')
  redis.call(publish, channel, cjson.encode(message))
end

-- Bump the sale's seq and announce the change with the counts after it
-- (`s`, kept current by fd_update): one JSON document, encoded once,
-- appended to the sale's event stream as its one field `e` (trimmed by
-- the persister once the change is durable in MongoDB) and published for
-- the live feed.
-- extra: optional kind-specific fields (rid, user, qty, ...).
local function fd_emit(s, kind, now, extra)
  local seq = s.seq + 1
  fd_update(s, {seq = seq})
  local ev = {
    seq = seq, kind = kind, ts = now, available = s.available, held = s.held,
    sold = s.sold, total = s.total, status = fd_status(s, now),
    waitlist_length = fd_waiting(s), epoch = s.epoch,
  }
  if extra then
    for k, v in pairs(extra) do ev[k] = v end
  end
  local json = cjson.encode(ev)
  redis.call('XADD', K.events, '*', 'e', json)
  local publish, channel = string.match(ARGV[1], '^(%u+) (.+)$')
  redis.call(publish, channel, json)
  return seq
end

local function fd_split(csv)
  local out = {}
  for part in string.gmatch(csv or '', '[^,]+') do out[#out + 1] = part end
  return out
end

-- Take `qty` units for `buyer`, who has bought `bought`, as a new hold
-- `rid` (the caller checked the window, the stock and the limit). Returned
-- serials first, then never-issued ones, skipping those an order took
-- already (`taken`, empty but after a rebuild raced an order). Returns the
-- deadline. Bound: O(qty), plus each taken serial once in the sale's life.
local function fd_take_hold(s, buyer, bought, qty, rid, now)
  local units = redis.call('SPOP', K.free, qty)
  local fresh = qty - #units
  local next = s.next
  if s.taken_n > 0 then
    local skipped = 0
    while fresh > 0 do
      if redis.call('SREM', K.taken, next) == 1 then
        skipped = skipped + 1
      else
        units[#units + 1] = tostring(next)
        fresh = fresh - 1
      end
      next = next + 1
    end
    if skipped > 0 then fd_update(s, {taken_n = s.taken_n - skipped}) end
  else
    for i = 0, fresh - 1 do units[#units + 1] = tostring(next + i) end
    next = next + fresh
  end
  local slots = {}
  for i = 1, qty do slots[i] = tostring(bought + i) end
  local expires = now + s.hold_ms
  fd_put_hold(rid, {user = buyer, qty = qty, units = table.concat(units, ','),
    slots = table.concat(slots, ','), state = 'held', created = now,
    expires = expires})
  redis.call('ZADD', K.deadlines, expires, rid)
  redis.call('HSET', K.holding, buyer, rid)
  fd_update(s, {next = next, available = s.available - qty,
    held = s.held + qty, holds_created = s.holds_created + 1})
  return expires
end

-- A hold leaves the live set in `state` (confirmed, cancelled, expired). It
-- stays readable for a while (a day by default), then the reaper prunes it.
local function fd_end_hold(rid, h, state, now)
  h.state = state
  fd_put_hold(rid, h)
  redis.call('ZADD', K.ended, now, rid)
  redis.call('ZREM', K.deadlines, rid)
  if redis.call('HGET', K.holding, h.user) == rid then
    redis.call('HDEL', K.holding, h.user)
  end
end

-- A live hold's order is durable: the hold ends confirmed, its units sold.
local function fd_confirm_hold(s, rid, h, now)
  fd_update(s, {held = s.held - h.qty, sold = s.sold + h.qty,
    holds_confirmed = s.holds_confirmed + 1})
  redis.call('HINCRBY', K.bought, h.user, h.qty)
  fd_end_hold(rid, h, 'confirmed', now)
  fd_emit(s, 'confirmed', now, {rid = rid, user = h.user, qty = h.qty})
end

-- A reservation id for a promoted buyer, of the same form as the API's
-- (`<sale id>-<24 hex>`): Redis's clock to the microsecond (seconds, a
-- marker no ObjectId's random part uses here, microseconds), then a
-- per-sale sequence (its last 20 bits). The clock keeps ids new across
-- copies: a copy rebuilt after Redis lost the sale, or one back from an
-- older AOF, counts its sequence again from where it stands, and an id
-- it gave twice would name an order (maybe one cancelled since) of
-- another buyer.
local function fd_promotion_id()
  local n = redis.call('HINCRBY', K.sale, 'promotion_seq', 1)
  local t = redis.call('TIME')
  local sale_id = string.match(K.sale, '{(.-)}')
  return string.format('%s-%08xf0f0f0%05x%05x', sale_id, tonumber(t[1]),
    tonumber(t[2]), n % 0x100000)
end

-- Hand free units to the head of the waiting list, in line order, in the
-- same step that freed them. Partial fits: the head is served whole; while
-- other holds are out (they may return more) units the head cannot use yet
-- stay set aside for the line. Once nothing is held, nothing more can come
-- back, so the head is offered what is free as a smaller hold. Closes the
-- line once every unit is sold. At most FD_PROMOTIONS a call (see above).
local function fd_promote(s, now)
  while fd_line_open(s, now) and s.available > 0 do
    if fd_promotions_left <= 0 then break end
    local head = redis.call('ZRANGE', K.wait, 0, 0)[1]
    if not head then break end
    local want = fd_num(redis.call('HGET', K.waitq, head))
    local bought = fd_bought(head)
    local room = s.limit - bought
    if want > room then want = room end
    if want > s.available then
      if s.held > 0 then break end
      want = s.available
    end
    local ticket = tonumber(redis.call('ZSCORE', K.wait, head))
    fd_promotions_left = fd_promotions_left - 1
    fd_line_remove(head)
    redis.call('HDEL', K.waitq, head)
    if want > 0 then
      local rid = fd_promotion_id()
      local expires = fd_take_hold(s, head, bought, want, rid, now)
      redis.call('HSET', K.promoted, head, rid)
      redis.call('HINCRBY', K.sale, 'promotions', 1)
      fd_emit(s, 'promoted', now,
        {rid = rid, user = head, qty = want, expires = expires, ticket = ticket})
    else
      fd_emit(s, 'waitlist_left', now, {user = head, ticket = ticket})
    end
  end
  if s.wl_closed ~= 1 and s.sold >= s.total and s.held == 0 then
    fd_update(s, {wl_closed = 1})
    fd_emit(s, 'sale_closed', now)
  end
end

-- Whether this call left promotions undone for want of budget: free units
-- wait for the head of the line, and another call should promote on.
local function fd_more(s, now)
  return fd_promotions_left <= 0 and s.available > 0 and fd_line_open(s, now)
    and redis.call('ZCARD', K.wait) > 0
end

-- End a held (or confirming) hold in `state` (cancelled | expired), give
-- its units back, announce it, then let the line take them first. The
-- caller has checked the state.
local function fd_release(s, rid, h, state, now)
  local units = fd_split(h.units)
  if #units > 0 then redis.call('SADD', K.free, unpack(units)) end
  fd_update(s, {available = s.available + h.qty, held = s.held - h.qty})
  redis.call('HINCRBY', K.sale, 'holds_' .. state, 1)
  fd_end_hold(rid, h, state, now)
  fd_emit(s, state, now, {rid = rid, user = h.user, qty = h.qty})
  fd_promote(s, now)
end
