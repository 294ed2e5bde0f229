-- wrk script of bench/growth.sh: BENCH_PATH ("/i" or "/e") with a campaign id drawn at random
-- among BENCH_CAMPAIGNS ("c0000001"...; every lookup lands on a real, active campaign, spread
-- over the whole table), BENCH_DIMS dimension arguments d1..dK with varying values, and a
-- counter. Browser-like User-Agent and Referer. done() prints one machine-readable line.
local base = os.getenv("BENCH_PATH") or "/i"
local ncamp = tonumber(os.getenv("BENCH_CAMPAIGNS") or "10")
local ndims = tonumber(os.getenv("BENCH_DIMS") or "2")
local counter = 0
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
wrk.headers["Referer"] = "https://news.example.com/articles/2026/11/some-story.html"

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  counter = counter + 1
  local parts = { base, "?cid=c", string.format("%07d", math.random(1, ncamp)) }
  for d = 1, ndims do
    parts[#parts + 1] = "&d" .. d .. "=v" .. ((counter + d) % 97)
  end
  parts[#parts + 1] = "&n=" .. counter
  return wrk.format("GET", table.concat(parts))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p99_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
