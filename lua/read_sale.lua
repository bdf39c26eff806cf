-- read_sale: a sale's live view in one atomic read, with the seq of the
-- last change it includes, so a live client can apply later changes on top.
-- Reads only.
-- Bound: O(1).
-- KEYS: sale wait
-- Replies (r): missing | sale {name, status, price, currency, total,
-- available, held, sold, limit, waitlist_length, waitlist, hold_ms, starts,
-- ends, seq, epoch, now, lobby, pay_ms}
return fd_with_sale(function(s, now)
  local v = redis.call('HMGET', K.sale, 'name', 'seq')
  return {r = 'sale', name = v[1] or '', status = fd_status(s, now),
    price = s.price, currency = s.currency, total = s.total,
    available = s.available, held = s.held, sold = s.sold, limit = s.limit,
    waitlist_length = fd_waiting(s), waitlist = s.waitlist == 1,
    hold_ms = s.hold_ms, starts = s.starts, ends = s.ends, seq = fd_num(v[2]),
    epoch = s.epoch, now = now, lobby = s.admit_rate > 0,
    pay_ms = s.pay_ms}
end)
