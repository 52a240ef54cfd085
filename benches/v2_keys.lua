-- v2_keys.lua: wrk load for the etcd v2 keys API, used by benches/compare-etcd.sh.
--
--   wrk -t1 -cN -dS -s benches/v2_keys.lua http://127.0.0.1:PORT/ -- MODE KEYS [N DONEFILE]
--
-- MODE:
--   put   PUT  /v2/keys/bench/k<random 0..KEYS-1>, form body value=<64 random [A-Za-z0-9]>
--   get   GET  /v2/keys/bench/k<random>                 (etcd's default: serializable)
--   getq  GET  /v2/keys/bench/k<random>?quorum=true     (linearizable)
--   fill  PUT  k0, k1, ... k<KEYS-1> once each (run with one thread); then keeps
--         re-writing k<KEYS-1>. Once every connection has moved on to that re-write,
--         every real key has been answered: DONEFILE is created so the caller can stop wrk.
--
-- Any status outside 200..299 is an error here (wrk's own counter ignores 3xx).
-- done() prints, for compare-etcd.sh to merge across several wrk processes:
--   STAT ok=<2xx> total=<responses> non2xx=<n> sockerr=<n> secs=<measured seconds>
--   PCT <percentile> <latency in microseconds>   (0.5 .. 99.5 step 0.5, then 99.6 .. 100)

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local bodies = {}
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local mode = "put"
local keys = 100000
local donefile = nil
local conns = 1
local cursor = 0
local repeats = 0
local flagged = false
bad = 0

local function random_body()
   local chars = {}
   for i = 1, 64 do
      local n = math.random(#alphabet)
      chars[i] = alphabet:sub(n, n)
   end
   return "value=" .. table.concat(chars)
end

function init(args)
   mode = args[1] or mode
   keys = tonumber(args[2] or keys)
   conns = tonumber(args[3] or conns)
   donefile = args[4]
   -- A different seed in every wrk process and thread.
   local salt = tonumber(tostring(bodies):match("0x(%x+)") or "0", 16) or 0
   math.randomseed(os.time() + salt % 1000003)
   for i = 1, 512 do
      bodies[i] = random_body()
   end
end

local function key()
   return "/v2/keys/bench/k" .. math.random(0, keys - 1)
end

function request()
   if mode == "get" then
      return wrk.format("GET", key())
   elseif mode == "getq" then
      return wrk.format("GET", key() .. "?quorum=true")
   elseif mode == "fill" then
      local k = cursor
      if k < keys then
         cursor = k + 1
      else
         k = keys - 1
         repeats = repeats + 1
      end
      return wrk.format("PUT", "/v2/keys/bench/k" .. k, form, bodies[k % #bodies + 1])
   end
   return wrk.format("PUT", key(), form, bodies[math.random(#bodies)])
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      bad = bad + 1
   end
   -- wrk keeps at most one request in flight per connection, so once `repeats` exceeds the
   -- number of connections, the answers still outstanding are all re-writes.
   if mode == "fill" and not flagged and repeats > conns then
      flagged = true
      if donefile then
         local f = io.open(donefile, "w")
         if f then
            f:write(bad, "\n")
            f:close()
         end
      end
   end
end

function done(summary, latency, requests)
   local non2xx = 0
   for _, t in ipairs(threads) do
      non2xx = non2xx + (tonumber(t:get("bad")) or 0)
   end
   local e = summary.errors
   local sockerr = e.connect + e.read + e.write + e.timeout
   io.write(string.format("STAT ok=%d total=%d non2xx=%d sockerr=%d secs=%.6f\n",
      summary.requests - non2xx, summary.requests, non2xx, sockerr, summary.duration / 1e6))
   if summary.requests == 0 then
      return
   end
   local p = 0.5
   while p <= 99.5 do
      io.write(string.format("PCT %.1f %d\n", p, latency:percentile(p)))
      p = p + 0.5
   end
   for _, q in ipairs({ 99.6, 99.7, 99.8, 99.9, 100 }) do
      io.write(string.format("PCT %.1f %d\n", q, latency:percentile(q)))
   end
end
