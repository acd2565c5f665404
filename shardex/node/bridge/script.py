"""The bridge's Redis write script: one server-side call per batch, with its epoch fence.

Kept apart from the Python that calls it (``redis_writer``) because it is a program of its own:
Redis runs it atomically, so "check the epoch, then XADD" can never be interleaved with a
writer of a deposed epoch.
"""

# One call writes a whole batch. KEYS: the events stream, then every trades stream the batch
# writes (declared, so Redis checks the caller's ACL on all of them before the script runs: a
# bridge user limited to ``~shardex:*`` is refused the whole batch, never half of it).
# ARGV: blob, trades key prefix, maxlen.
# blob = msgpack [[id, [field, value, ...], symbol-or-nil, [trade fields...]], ...]
# An account shard's batch: the balances stream, and ``shardex:orders:<j>`` as the second
# stream (prefix ``shardex:orders:``, "symbol" j); a new order's item has no first-stream fields.
# Returns {written, dups, trades, conflicts, 0, deleted} where conflicts is a flat list
# [stream key, id, reason, ...] of entries that Redis holds differently (or cannot take), and
# deleted [stream key, entries removed, ...] names each stream of the batch that lost entries
# although the bridge never trims (maxlen 0): no ACL can stop a writer's XADD MAXLEN/MINID, so
# the bridge reports it (XINFO STREAM: entries-added minus length, Redis/Valkey >= 7.0).
# Replicated shards: ARGV[4] is the leader epoch the batch was received under and the
# last KEY is ``<events key>:epoch``, the highest epoch written for the shard: a batch of an
# older epoch writes nothing and returns {0, 0, 0, {}, that epoch} (check epoch, then XADD, in
# one script: no writer of a deposed epoch can slip an entry in). ARGV[4] absent or 0: no check.
# ARGV[5]: the seq of the entry this batch follows, as this bridge wrote it (an events
# stream's previous seq; a balances stream's newest balance entry; absent or 0: no check). If
# the stream lacks it -- a failover of an asynchronously replicated Redis lost the last writes,
# with no error the bridge saw -- nothing is written and the reply is {0, 0, 0, {}, 0, {}, 1}:
# the bridge resumes from what the stream holds and repairs the rest from the shard (without
# this, its tracker believed them written: a permanent gap).
WRITE_SCRIPT = """
local evs = cmsgpack.unpack(ARGV[1])
local stream, tprefix, maxlen = KEYS[1], ARGV[2], ARGV[3]
local epoch = tonumber(ARGV[4] or '0') or 0
local nkeys = #KEYS
if epoch > 0 then
  local ekey = KEYS[nkeys]
  nkeys = nkeys - 1
  local cur = tonumber(redis.call('GET', ekey) or '0') or 0
  if cur > epoch then
    return {0, 0, 0, {}, cur}
  end
  if cur < epoch then
    redis.call('SET', ekey, epoch)
  end
end
local prev = tonumber(ARGV[5] or '0') or 0
if prev > 0 and #redis.call('XRANGE', stream, prev .. '-0', prev .. '-0') == 0 then
  return {0, 0, 0, {}, 0, {}, 1}
end
local declared = {}
for i = 2, nkeys do
  declared[KEYS[i]] = true
end
local written, dups, trades = 0, 0, 0
local conflicts = {}
local function seqof(id)
  return tonumber(string.match(id, '^(%d+)')) or 0
end
-- a trades entry's trade id (its fields are a flat list: name, value, ...); nil: not a trade
local function tradeid(fields)
  for k = 1, #fields - 1, 2 do
    if fields[k] == 'trade_id' then
      return tonumber(fields[k + 1])
    end
  end
  return nil
end
local function xadd(key, id, fields)
  if maxlen ~= '0' then
    return redis.pcall('XADD', key, 'MAXLEN', '~', maxlen, id, unpack(fields))
  end
  return redis.pcall('XADD', key, id, unpack(fields))
end
-- 0 written, 1 identical entry already there, 2 conflict (reason in the second value).
-- above: a new trade (its events entry was just written): where the pair's trades stream
-- tops above its ID with an earlier trade of the pair (the pair moved here from a shard whose
-- seqs are higher), it goes just above that top (same ms, next sequence part), so the
-- stream's IDs keep increasing; a top that is not an earlier trade is a conflict as before
local function add(key, id, fields, above)
  local r = xadd(key, id, fields)
  if type(r) ~= 'table' or not r.err then
    return 0
  end
  if above and string.find(r.err, 'equal or smaller', 1, true) then
    local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    local prev, this = #top == 1 and tradeid(top[1][2]), tradeid(fields)
    if prev and this and prev < this and seqof(top[1][1]) >= seqof(id) then
      r = xadd(key, string.match(top[1][1], '^(%d+)') .. '-*', fields)
      if type(r) ~= 'table' or not r.err then
        return 0
      end
    end
  end
  if not string.find(r.err, 'equal or smaller', 1, true) then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      return 2, 'key holds another type'
    end
    return -1, r.err
  end
  local cur = redis.call('XRANGE', key, id, id)
  if #cur == 1 then
    local f = cur[1][2]
    if #f == #fields then
      local same = true
      for k = 1, #f do
        if f[k] ~= fields[k] then
          same = false
          break
        end
      end
      if same then
        return 1
      end
    end
    return 2, 'a different entry holds this id'
  end
  if maxlen ~= '0' and redis.call('XLEN', key) >= tonumber(maxlen) then
    local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #first == 1 and seqof(id) < seqof(first[1][1]) then
      return 1  -- trimmed away below the stream's first entry: written long ago
    end
  end
  return 2, 'a foreign entry above this id tops the stream'
end
for i = 1, #evs do
  -- an entry: {id, fields[, trades stream symbol, trades stream fields]} (``EntryFormatter``)
  -- (no fields: an entry of the second stream only, e.g. an account shard's new order)
  local id, fields, symbol, tfields = evs[i][1], evs[i][2], evs[i][3], evs[i][4]
  local s, why = -2, nil
  if #fields > 0 then
    s, why = add(stream, id, fields)
  end
  if s == -1 then
    return redis.error_reply(why)
  end
  if s == 1 then
    dups = dups + 1
  else
    if s == 0 then
      written = written + 1
    elseif s == 2 then
      conflicts[#conflicts + 1] = stream
      conflicts[#conflicts + 1] = id
      conflicts[#conflicts + 1] = why
    end
    if symbol then
      local key = tprefix .. symbol
      if not declared[key] then
        return redis.error_reply('ERR trades stream ' .. key .. ' not declared in KEYS')
      end
      local t, twhy = add(key, id, tfields, s == 0)
      if t == -1 then
        return redis.error_reply(twhy)
      end
      if t == 0 then
        trades = trades + 1
      elseif t == 2 then
        conflicts[#conflicts + 1] = key
        conflicts[#conflicts + 1] = id
        conflicts[#conflicts + 1] = twhy
      end
    end
  end
end
-- a stream this bridge never trims (maxlen 0) with deleted entries: someone else trimmed it
local deleted = {}
if maxlen == '0' then
  for i = 1, nkeys do
    local info = redis.pcall('XINFO', 'STREAM', KEYS[i])
    if type(info) == 'table' and not info.err then
      local f = {}
      for k = 1, #info - 1, 2 do
        f[info[k]] = info[k + 1]
      end
      local gone = (tonumber(f['entries-added']) or 0) - (tonumber(f['length']) or 0)
      if gone > 0 then
        deleted[#deleted + 1] = KEYS[i]
        deleted[#deleted + 1] = gone
      end
    end
  end
end
return {written, dups, trades, conflicts, 0, deleted}
"""
