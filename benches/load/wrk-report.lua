-- Prints what the load benchmark reads: requests, errors and latency percentiles in microseconds.
-- BENCH_HEADER_NAME and BENCH_HEADER_VALUE, when set, add one request header (the chain's JWT in
-- Authorization, the program's x-api-key).
local name = os.getenv("BENCH_HEADER_NAME")
local value = os.getenv("BENCH_HEADER_VALUE")
if name ~= nil and name ~= "" then
    wrk.headers[name] = value
end

done = function(summary, latency, requests)
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout
    io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50=%d p99=%d p999=%d\n",
        summary.requests, summary.duration, errors,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
