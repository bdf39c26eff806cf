-- return_order: a confirmed order was cancelled (MongoDB has it so
-- already): its units come back in one step. They go to the head of the
-- waiting list first (a line closed because every unit was sold opens
-- again while the sale is active), else to stock; after the end they are
-- recorded as free and nothing is resold. The buyer's bought count drops
-- by the order's quantity: the per-buyer limit counts live orders only.
-- Once per order (`returned`); while a rebuild holds the lock nothing
-- happens (the caller tries again), so a rebuild that read the order
-- before it was cancelled cannot swap in after its units came back.
-- A copy that still has the order's hold live (its confirm never reached
-- Redis, or the copy is older than the confirm) never counted the order:
-- the hold ends cancelled and its units come back from it, once; the
-- reaper then finds nothing to settle.
-- Bound: O(the order's units, at most 1000), FD_PROMOTIONS promotions.
-- KEYS: sale holds deadlines ended free taken bought holding events wait
--   waitq promoted returned restore
-- ARGV[1] publish command and channel  ARGV[2] order id  ARGV[3] buyer
-- ARGV[4] quantity  ARGV[5] the order's units, comma-separated
-- Replies (r): returned | already | rebuilding | missing (Redis has no such
-- sale: a rebuild reads the order cancelled)
return fd_with_sale(function(s, now)
  local id = ARGV[2]
  if redis.call('HEXISTS', K.returned, id) == 1 then return {r = 'already'} end
  if redis.call('EXISTS', K.restore) == 1 then return {r = 'rebuilding'} end
  local qty = tonumber(ARGV[4])
  local h = fd_hold(id)
  if fd_is_live(h) then
    fd_release(s, id, h, 'cancelled', now)
  else
    local units = fd_split(ARGV[5])
    if #units > 0 then redis.call('SADD', K.free, unpack(units)) end
    fd_update(s, {available = s.available + qty, sold = s.sold - qty})
    if redis.call('HINCRBY', K.bought, ARGV[3], -qty) <= 0 then
      redis.call('HDEL', K.bought, ARGV[3])
    end
  end
  redis.call('HSET', K.returned, id, 1)
  redis.call('HINCRBY', K.sale, 'orders_cancelled', 1)
  fd_emit(s, 'order_cancelled', now, {rid = id, user = ARGV[3], qty = qty})
  if s.wl_closed == 1 and fd_outside_window(s, now) == nil then
    fd_update(s, {wl_closed = 0})
    fd_emit(s, 'line_reopened', now)
  end
  fd_promote(s, now)
  return {r = 'returned'}
end)
