-- rebuild_lock: renew or release a sale's rebuild lock, only while this
-- caller owns it (the lock is taken with SET NX PX).
-- Bound: O(1).
-- KEYS: restore
-- ARGV[1] owner token  ARGV[2] renew | release  ARGV[3] new lifetime (ms)
-- Replies (r): held (renewed) | released | lost (another caller owns it, or
-- it lapsed)
if redis.call('GET', K.restore) ~= ARGV[1] then return fd_reply({r = 'lost'}) end
if ARGV[2] == 'renew' then
  redis.call('PEXPIRE', K.restore, tonumber(ARGV[3]))
  return fd_reply({r = 'held'})
end
redis.call('DEL', K.restore)
return fd_reply({r = 'released'})
