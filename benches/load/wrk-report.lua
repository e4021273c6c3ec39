-- Prints what the load benchmark reads: requests, errors and latency percentiles in microseconds.
-- BENCH_AUTH, when set, is sent as the Authorization header (the chain configuration checks a JWT).
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
    wrk.headers["Authorization"] = auth
end

done = function(summary, latency, requests)
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout
    io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50=%d p99=%d p999=%d\n",
        summary.requests, summary.duration, errors,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
