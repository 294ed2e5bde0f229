-- wrk script of the benchmarks: BENCH_PATH (e.g. "/i?cid=summer-sale") gets a varying
-- publisher/placement and a counter, so no two requests have the same URL; a browser-like
-- User-Agent and Referer are sent. done() prints one machine-readable line.
local base = os.getenv("BENCH_PATH") or "/"
local sep = base:find("?", 1, true) and "&" or "?"
local counter = 0
local plc = { "top", "side", "footer", "inline" }
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
wrk.headers["Referer"] = "https://news.example.com/articles/2026/11/some-story.html"

function request()
  counter = counter + 1
  return wrk.format("GET", base .. sep .. "pub=site" .. (counter % 97) .. "&plc=" .. plc[(counter % 4) + 1] .. "&n=" .. counter)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d errors=%d status_errors=%d p50_us=%d p99_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
