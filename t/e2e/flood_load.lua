-- wrk script of t/e2e/flood.sh: valid tracking requests mixed with malformed ones. Every
-- request is built here as raw bytes (wrk.format would add headers we do not want) and carries
-- `X-Kind: <kind>` and `X-N: <unique number>`; the valid ones also carry `n=<the same number>`
-- as a dimension. The checker (flood_check.py) knows the kinds below, and computes from the
-- logged request alone (location, arguments, headers, Content-Length) what the module must do:
-- refuse it (the reason and the status) or store exactly which event. The malformed kinds go
-- to the default locations (/i /c /cv /v: tracker_invalid reject, tracker_limits defaults) and
-- a third of them to their flag-mode twins (/if /cf /cvf /vf: tracker_invalid flag,
-- tracker_limits query=64k args=4096). The "edge" kind probes each limit on both sides (query
-- strings of 4,095-4,097 bytes, 60-70 arguments, values of 1,023-1,100 decoded bytes, campaign
-- ids of 63-65 characters, click ids of 127-200 bytes, numbers of 63-65 bytes) and sends
-- requests with several invalid fields at once, whose reason tells the handler's check order;
-- "cvbig" sends bodies of 65,536 (stored), 65,537 and 100,000 bytes (413), some with a query
-- string over the limit too (the body is checked first).
--
-- Each thread stops by itself after FLOOD_PER_THREAD responses. Deterministic per thread
-- (math.randomseed(FLOOD_SEED + thread number)).

local per_thread = tonumber(os.getenv("FLOOD_PER_THREAD") or "160000")
local seed = tonumber(os.getenv("FLOOD_SEED") or "1")
local counter = 0
local done_n = 0
local threads = {}

-- The same strings as flood_check.py: NORMAL_UA, LONG_UA, LONG_REFERER.
local NORMAL_UA = "Mozilla/5.0 (X11; Linux x86_64) flood"
local LONG_UA = "Mozilla/5.0 " .. string.rep("\195\169x\1", 5000)
local LONG_REFERER = "https://ref.example/" .. string.rep("r%0d%0a\255", 700)

-- kind, weight (per 1000)
local KINDS = {
  { "i", 284 }, { "c", 140 }, { "cv", 70 }, { "cvbig", 4 }, { "cvchunk", 6 }, { "v", 50 },
  { "b", 20 }, { "badcid", 60 }, { "unknown", 30 }, { "paused", 20 }, { "huge", 20 },
  { "toolong", 4 }, { "manyargs", 30 }, { "badpct", 40 }, { "binval", 40 }, { "badvalue", 20 },
  { "badvideo", 20 }, { "badclick", 10 }, { "edge", 30 }, { "longua", 20 }, { "method", 20 },
  { "rawctl", 4 }, { "both", 4 }, { "lim", 40 }, { "limc", 14 },
}
local CUMUL, TOTAL = {}, 0
for _, k in ipairs(KINDS) do
  TOTAL = TOTAL + k[2]
  CUMUL[#CUMUL + 1] = { TOTAL, k[1] }
end

local BAD_CIDS = {
  "", "a%20b", "../x", "..%2f..%2fetc", "a/b", string.rep("x", 65), "%ff%fe", "camp-ok%00",
  "camp-ok%0d%0aSet-Cookie:%20x=1", "%c0%af", "caf%C3%A9", "{campaign}", "a%26b", "%", "%zz",
  "camp ok", "camp-ok\255", "\192\175", "<script>", "camp-ok%2F", string.rep("%41", 65),
  "javascript:alert(1)", "//evil.example", "@evil", "a\\b", "'or'1'='1", "a;b", "a,b",
}
local BAD_PCT = { "%", "%%", "%4", "%zz", "%%41", "100%", "%4%41", "%g0", "%0", "%%%", "%2", "%-1", "%+1", "%%0d%0a" }
-- (the last ones are valid numbers: stored in both modes)
local BAD_VALUES = { "abc", "1e3", "inf", "NaN", "1.2.3", "%201", "0x10", "1,5", "--1", string.rep("9", 400), "%ff",
  "12.5%00", string.rep("1", 100), string.rep("1", 65), "1_0", "", "+1.5", "-0", ".5", "5.", "%31%2E5",
  string.rep("1", 64) }
local BAD_VIDEO = { "", "Q1", "q5", "start%00", "complete ", "mid%0d%0a", string.rep("q", 40), "%ff",
  "%63omplete", "q%31", "completecomplete1", "mid&event=q1" }
local METHODS = { "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "FOO", "MKCOL", "TRACE", "CONNECT" }
local RAWCTL = { "\1", "\27[0m", "\127", "\0", "\t", "\11", "\12", "\r" }
local PUBS = { "news", "blog", "a%20b", "caf%C3%A9", "x%2Fy", "q%3Fz%26w", "%E2%82%AC", "" }

-- Bytes for values: raw high bytes, printable ASCII without space, '#' and '&', and %XX escapes
-- of any byte (NUL, CR, LF, '&', '%'...).
local function garbage(len)
  local t = {}
  local n = 0
  while n < len do
    local r = math.random(1, 10)
    if r <= 3 then
      t[#t + 1] = string.char(math.random(128, 255)); n = n + 1
    elseif r <= 6 then
      local c = math.random(33, 126)
      if c == 35 or c == 38 then c = 120 end
      t[#t + 1] = string.char(c); n = n + 1
    else
      t[#t + 1] = string.format("%%%02X", math.random(0, 255)); n = n + 3
    end
  end
  return table.concat(t)
end

local function raw(method, path, n, kind, extra, body)
  local t = { method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Kind: ", kind, "\r\nX-N: ", n, "\r\n" }
  if extra then
    for _, h in ipairs(extra) do t[#t + 1] = h .. "\r\n" end
  else
    t[#t + 1] = "User-Agent: " .. NORMAL_UA .. "\r\n"
  end
  if body then t[#t + 1] = "Content-Length: " .. #body .. "\r\n" end
  t[#t + 1] = "\r\n"
  if body then t[#t + 1] = body end
  return table.concat(t)
end

local function pick(list) return list[math.random(1, #list)] end
local function hex32() return string.format("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)) end
-- A third of the malformed requests go to the flag-mode twin of their location.
local FLAG = { ["/i"] = "/if", ["/c"] = "/cf", ["/cv"] = "/cvf", ["/v"] = "/vf" }
local function route(path)
  if FLAG[path] and math.random(1, 3) == 1 then return FLAG[path] end
  return path
end
-- `len` decoded bytes: letters and digits, and %XX escapes of any byte (1 in 3).
local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local CIDCHARS = ALNUM .. "_.:-"
local function decoded(len, chars)
  chars = chars or ALNUM
  local t = {}
  for i = 1, len do
    if math.random(1, 3) == 1 then
      t[i] = string.format("%%%02X", math.random(0, 255))
    else
      local k = math.random(1, #chars)
      t[i] = chars:sub(k, k)
    end
  end
  return table.concat(t)
end
-- Pads query string `q` with unconfigured arguments (at most 1,000 bytes each) to `len` bytes.
local function pad(q, len)
  local t = { q }
  local left = len - #q
  while left > 0 do
    if left < 4 then t[#t + 1] = string.rep("&", left); left = 0
    else
      local k = math.min(left - 3, 1000)
      t[#t + 1] = "&z=" .. string.rep("Z", k); left = left - 3 - k
    end
  end
  return table.concat(t)
end
-- The limits on both sides, on the default locations (and now and then a flag-mode twin).
local EDGE = {
  function(n) -- query string of 4,096 bytes (stored) or 4,097 (query_too_long)
    return pick({ "/i", "/c" }), pad("cid=camp-ok&n=" .. n .. "&pub=edge", 4095 + math.random(0, 2))
  end,
  function(n) -- 60-70 non-empty arguments (64: stored; 65: too_many_args), empty parts between
    local t = { "cid=camp-ok", "n=" .. n }
    for a = 3, math.random(60, 70) do t[#t + 1] = "a" .. a .. "=" .. (a % 10) end
    local q = table.concat(t, pick({ "&", "&&", "&&&" }))
    return pick({ "/i", "/c", "/b" }), pick({ "", "&", "&&" }) .. q .. pick({ "", "&", "&&" })
  end,
  function(n) -- a dimension of 1,023-1,100 decoded bytes (1,025 and more: value_too_long)
    return pick({ "/i", "/c" }), "cid=camp-ok&n=" .. n .. "&pub=" .. decoded(pick({ 1023, 1024, 1025, 1100 }))
  end,
  function(n) -- a campaign id of 63-65 characters (65: invalid_campaign), or camp-ok encoded
    local cid = pick({ decoded(63, CIDCHARS), decoded(64, CIDCHARS), decoded(65, CIDCHARS), "%63%61%6D%70%2D%6F%6B", "camp-o%6b" })
    return pick({ "/i", "/c", "/b" }), "cid=" .. cid .. "&n=" .. n
  end,
  function(n) -- a click id of 127-200 bytes (129 and more: invalid_click_id)
    return pick({ "/cv", "/b", "/i" }), "cid=camp-ok&n=" .. n .. "&click_id=" .. decoded(pick({ 127, 128, 129, 200 }))
  end,
  function(n) -- a number of 63-65 bytes (65: invalid_value)
    local len = pick({ 63, 64, 65 })
    local v = pick({ string.rep("7", len), "-" .. string.rep("1", len - 3) .. ".5" })
    if math.random(1, 2) == 1 then
      return "/v", "cid=camp-ok&n=" .. n .. "&event=q3&watch_time=" .. v
    end
    return pick({ "/cv", "/b" }), "cid=camp-ok&n=" .. n .. "&value=" .. v
  end,
  function(n) -- several checks failing at once (or none), the arguments in any order: the first
    -- failing check in the handler's order is the reason
    local t = { "n=" .. n,
      "cid=" .. pick({ "camp-ok", pick(BAD_CIDS) }),
      "click_id=" .. pick({ hex32(), decoded(200) }),
      "value=" .. pick({ "1.5", pick(BAD_VALUES) }),
      "event=" .. pick({ "q1", pick(BAD_VIDEO) }),
      "watch_time=" .. pick({ "2", pick(BAD_VALUES) }),
      "pub=" .. pick({ "x", decoded(1100) }) }
    for i = #t, 2, -1 do
      local j = math.random(1, i)
      t[i], t[j] = t[j], t[i]
    end
    return pick({ "/i", "/c", "/cv", "/v", "/b" }), table.concat(t, "&")
  end,
}

-- Pools of random strings, made once per thread: building 30 KB strings per request would
-- make wrk, not nginx, the bottleneck.
local POOL = {}
local function pool(name, count, lo, hi)
  POOL[name] = {}
  for i = 1, count do POOL[name][i] = garbage(math.random(lo, hi)) end
end
local function from(name) return POOL[name][math.random(1, #POOL[name])] end

local BUILD = {
  i = function(n) return raw("GET", "/i?cid=camp-ok&pub=" .. pick(PUBS) .. "&n=" .. n, n, "i") end,
  c = function(n) return raw("GET", "/c?cid=camp-ok&pub=" .. pick(PUBS) .. "&n=" .. n, n, "c") end,
  cv = function(n)
    return raw("POST", "/cv?cid=camp-ok&click_id=" .. hex32() .. "&value=12.50&n=" .. n, n, "cv", nil, from("body"))
  end,
  -- Content-Length 65,536 (the limit: stored), 65,537 or 100,000 (413 in both modes).
  -- A quarter with a query string of 5,000 bytes too (the body is checked first).
  cvbig = function(n)
    local q = "cid=camp-ok&value=" .. math.random(1, 999) .. ".25&n=" .. n
    if math.random(1, 4) == 1 then q = pad(q, 5000) end
    return raw("POST", route("/cv") .. "?" .. q, n, "cvbig", nil, from("bigbody"))
  end,
  cvchunk = function(n)
    local chunk = from("chunk")
    return raw("POST", "/cv?cid=camp-ok&value=-3&click_id=" .. hex32() .. "&n=" .. n, n, "cvchunk",
      { "User-Agent: " .. NORMAL_UA, "Transfer-Encoding: chunked" },
      nil) .. string.format("%x\r\n", #chunk) .. chunk .. "\r\n0\r\n\r\n"
  end,
  v = function(n) return raw("GET", "/v?cid=camp-ok&event=" .. pick({ "start", "q1", "mid", "q3", "complete" }) .. "&watch_time=7.5&n=" .. n, n, "v") end,
  b = function(n) return raw("GET", "/b?cid=camp-ok&n=" .. n, n, "b") end,
  badcid = function(n) return raw("GET", route(pick({ "/i", "/c" })) .. "?cid=" .. pick(BAD_CIDS) .. "&pub=bad&n=" .. n, n, "badcid") end,
  unknown = function(n) return raw("GET", pick({ "/i", "/c0" }) .. "?cid=nope-" .. n .. "&n=" .. n, n, "unknown") end,
  paused = function(n) return raw("GET", pick({ "/c", "/c0" }) .. "?cid=camp-paused&n=" .. n, n, "paused") end,
  huge = function(n) return raw("GET", route("/i") .. "?cid=camp-ok&n=" .. n .. "&pub=" .. from("huge"), n, "huge") end,
  toolong = function(n) return raw("GET", "/i?cid=camp-ok&n=" .. n .. "&pub=" .. string.rep("A", 40000), n, "toolong") end,
  -- 1,000-3,000 arguments (8-27 KB), or 55-300 in under 4 KB with empty parts between.
  manyargs = function(n)
    local tail
    if math.random(1, 2) == 1 then tail = "cid=camp-ok&n=" .. n .. "&cid=bad/x"
    else tail = "CID=camp-ok&N=" .. n .. "&pub=" .. from("short") end
    return raw("GET", route("/c") .. "?" .. from(pick({ "manyargs", "someargs" })) .. "&" .. tail, n, "manyargs")
  end,
  badpct = function(n)
    local cid = "%63amp-ok" .. pick({ "", pick(BAD_PCT) })
    return raw("GET", route("/i") .. "?cid=" .. cid .. "&pub=" .. pick(BAD_PCT) .. pick(BAD_PCT) .. "&click_id=" .. pick(BAD_PCT) .. "&n=" .. n, n, "badpct")
  end,
  binval = function(n)
    return raw("GET", route("/i") .. "?cid=camp-ok&n=" .. n .. "&pub=" .. from("bin"), n, "binval",
      { "User-Agent: " .. from("hdr"), "Referer: " .. from("hdr") })
  end,
  badvalue = function(n) return raw("GET", route("/cv") .. "?cid=camp-ok&value=" .. pick(BAD_VALUES) .. "&n=" .. n, n, "badvalue") end,
  badvideo = function(n)
    return raw("GET", route("/v") .. "?cid=camp-ok&event=" .. pick(BAD_VIDEO) .. "&watch_time=" .. pick(BAD_VALUES) .. "&n=" .. n, n, "badvideo")
  end,
  -- Click ids of 30-400 bytes of garbage (decoded: 129 bytes and more refused or cut).
  badclick = function(n)
    return raw("GET", route("/cv") .. "?cid=camp-ok&n=" .. n .. "&click_id=" .. from("click"), n, "badclick")
  end,
  edge = function(n)
    local path, q = pick(EDGE)(n)
    return raw("GET", route(path) .. "?" .. q, n, "edge")
  end,
  longua = function(n)
    return raw("GET", route("/i") .. "?cid=camp-ok&n=" .. n, n, "longua", { "User-Agent: " .. LONG_UA, "Referer: " .. LONG_REFERER })
  end,
  method = function(n) return raw(pick(METHODS), "/" .. pick({ "i", "c", "cv" }) .. "?cid=camp-ok&n=" .. n, n, "method") end,
  rawctl = function(n) return raw("GET", "/i?cid=camp-ok&pub=a" .. pick(RAWCTL) .. "b&n=" .. n, n, "rawctl") end,
  both = function(n)
    return raw("POST", "/cv?cid=camp-ok&n=" .. n, n, "both", { "Transfer-Encoding: chunked" }, "5\r\nhello\r\n0\r\n\r\n")
  end,
  lim = function(n) return raw("GET", "/lim?cid=camp-ok&n=" .. n, n, "lim") end,
  limc = function(n) return raw("GET", "/limc?cid=camp-ok&n=" .. n, n, "limc") end,
}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(seed * 1000 + tid)
  pool("huge", 24, 6000, 30000)
  pool("bin", 64, 1, 1500)
  pool("hdr", 64, 1, 300)
  pool("body", 32, 0, 2000)
  POOL.bigbody = { string.rep("b", 65536), string.rep("b", 65537), string.rep("b", 100000) }
  pool("chunk", 16, 1, 5000)
  pool("short", 32, 1, 20)
  pool("click", 32, 30, 400)
  POOL.manyargs = {}
  for v = 1, 8 do
    local t = {}
    for a = 1, math.random(1000, 3000) do t[#t + 1] = "a" .. a .. "=" .. (a % 10) end
    POOL.manyargs[v] = table.concat(t, "&")
  end
  POOL.someargs = {}
  for v = 1, 16 do
    local t = {}
    for a = 1, math.random(55, 300) do t[#t + 1] = "a" .. a .. "=" .. (a % 10) .. pick({ "", "", "&", "&&" }) end
    POOL.someargs[v] = table.concat(t, "&")
  end
end

function request()
  counter = counter + 1
  local n = tostring(tid * 100000000 + counter)
  local r = math.random(1, TOTAL)
  for _, c in ipairs(CUMUL) do
    if r <= c[1] then return BUILD[c[2]](n) end
  end
end

-- A thread that has its share writes FLOOD_DONE_DIR/thread-N (flood.sh waits for all of
-- them, then stops wrk, which otherwise waits out its -d duration) and stops.
local done_dir = os.getenv("FLOOD_DONE_DIR")

function response(status, headers, body)
  done_n = done_n + 1
  if done_n == per_thread then
    if done_dir then
      local f = io.open(done_dir .. "/thread-" .. tid, "w")
      if f then f:write(done_n, "\n"); f:close() end
    end
    wrk.thread:stop()
  end
end
