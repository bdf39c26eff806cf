-- unlock: release a sale's rebuild lock only if this caller still owns it.
-- KEYS: restore
-- ARGV[1] owner token
-- Replies (r): released | lost (another caller owns it, or it lapsed)
if redis.call('GET', K.restore) == ARGV[1] then
  redis.call('DEL', K.restore)
  return fd_reply({r = 'released'})
end
return fd_reply({r = 'lost'})
