#!/usr/bin/env bash
# Checks a table printed by scripts/bench.sh (on standard input) for completeness: one row per
# connections mode and client count (1, 50, 500, 1000), requests/s and p50/p99/p99.9 of both paths
# as numbers, instructions per request for both paths where they are measured (50, 500 and 1000
# clients) and "–" where not, and the process measures. The values themselves are not judged.
# Prints what is missing and exits 1, or exits 0.
set -euo pipefail

awk -F'|' '
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    function number(s) { return s ~ /^[0-9]+(\.[0-9]+)?$/ }
    trim($2) == "keep-alive" || trim($2) == "new-connection" {
        mode = trim($2); clients = trim($3); seen[mode "/" clients] = 1
        for (f = 4; f <= 11; f++)
            if (!number(trim($f))) { print "bench-check: " mode " " clients ": column " f - 1 " is \"" trim($f) "\", not a number"; bad = 1 }
        for (f = 14; f <= 15; f++) {
            value = trim($f)
            if (clients == 1 ? value != "–" : value !~ /^[0-9]+k$/) { print "bench-check: " mode " " clients ": instructions column " f - 1 " is \"" value "\""; bad = 1 }
        }
    }
    $2 ~ /start-up|RSS idle|RSS after the load|RSS with/ {
        if (trim($3) !~ /^[0-9.]+ (ms|MiB)$/) { print "bench-check: \"" trim($2) "\" has no value"; bad = 1 }
        measures++
    }
    END {
        split("keep-alive new-connection", modes, " "); split("1 50 500 1000", counts, " ")
        for (m in modes) for (c in counts)
            if (!((modes[m] "/" counts[c]) in seen)) { print "bench-check: no row for " modes[m] " " counts[c]; bad = 1 }
        if (measures != 5) { print "bench-check: " measures + 0 " process measures, not 5"; bad = 1 }
        exit bad
    }'
