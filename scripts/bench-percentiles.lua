-- wrk script for scripts/bench.sh: after the run, prints one machine-readable line with
-- requests/s, the latency percentiles (p99.9 too, which `wrk --latency` does not show) and the
-- error counts, so bench.sh parses this line instead of wrk's human output.
--
--   BENCH rps=… p50_us=… p99_us=… p999_us=… requests=… errors_connect=… errors_read=…
--         errors_write=… errors_timeout=… non2xx=…          (one line)
--
-- Latencies are in microseconds. wrk counts a response with a status above 399 as a `status`
-- error; it is printed as `non2xx` (wrk's own output calls it "Non-2xx or 3xx responses").
-- Plain Lua 5.1, so it runs with the LuaJIT that Debian's wrk is built with.

done = function(summary, latency, requests)
    local seconds = summary.duration / 1e6
    local rps = 0
    if seconds > 0 then
        rps = summary.requests / seconds
    end
    local errors = summary.errors
    io.write(string.format(
        "BENCH rps=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f requests=%.0f"
            .. " errors_connect=%.0f errors_read=%.0f errors_write=%.0f errors_timeout=%.0f"
            .. " non2xx=%.0f\n",
        rps, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        summary.requests, errors.connect, errors.read, errors.write, errors.timeout,
        errors.status))
end
