-- wrk script for the end-to-end test: every request type with varied campaigns and
-- dimensions; each thread stops by itself after TRACKER_REQUESTS / threads responses.
local paths = {
  "/i?cid=summer-sale&pub=news%20site&plc=top",
  "/c?cid=summer-sale&pub=blog&plc=side",
  "/cv?cid=app-install&click_id=0123456789abcdef0123456789abcdef&value=12.50&pub=apps",
  "/v?cid=app-install&event=q1&watch_time=7.5&pub=tube",
  "/b?cid=summer-sale&pub=mail",
  "/i?cid=no-such-campaign&pub=x",
  "/c?cid=winter-teaser&pub=y",
}
local limit = tonumber(os.getenv("TRACKER_REQUESTS_PER_THREAD") or "10000")
local counter = 0
local done = 0

function request()
  counter = counter + 1
  local p = paths[(counter % #paths) + 1]
  return wrk.format("GET", p .. "&n=" .. counter)
end

function response(status, headers, body)
  done = done + 1
  if done >= limit then
    wrk.thread:stop()
  end
end
