-- lobby_read: where a buyer stands in a sale's lobby, and its figures, on
-- this Redis' clock. Reads only.
-- Bound: O(log lobby).
-- KEYS: sale early lobby lobbyin admitted
-- ARGV[1] buyer
-- Replies (r): missing | place {state: waiting | admitted | used | lapsed
--   | none, rank (0-based, while waiting once the draw is loaded),
--   deadline, admitted_at, joined_at, late, opened, started, drawn, final,
--   length, admitted_count, joined, draw_count, rate, admission_ms, opens,
--   commit
--   (from the opening), now}
return fd_with_sale(function(s, now)
  return fd_lobby_place(s, ARGV[1], now)
end)
