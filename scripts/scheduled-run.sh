#!/usr/bin/env bash
# A scheduled benchmark run: run a suite, then compare it with the previous run of the same suite.
# The one script that the cron line, the systemd unit and the CI job of docs/scheduling.md call.
#
#   scripts/scheduled-run.sh SUITE [harness run options, e.g. --out DIR or --ray auto]
#
# Environment:
#   HARNESS                      the harness command (default: harness; e.g. "python -m harness")
#   HARNESS_RESULTS              where run folders go (the harness's own default: results)
#   HARNESS_COMPARE_THRESHOLD    relative change below which compare flags nothing (harness default)
#   HARNESS_SCHEDULE_WAIT=1      wait for another run holding the machine instead of skipping
#
# Exit status: 0 all ok (or the first run of the suite: nothing to compare with yet);
#              1 a regression against the previous run, or failed cases;
#              2 bad input; 75 skipped because another run held the machine (no --wait);
#              130 interrupted.
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 SUITE [harness run options...]" >&2
    exit 2
fi
suite=$1
shift
read -r -a harness_cmd <<< "${HARNESS:-harness}"

# A schedule skips rather than queues: a run that waited for the lock would start at a time
# nobody chose, and queued runs pile up behind a long one. Set HARNESS_SCHEDULE_WAIT=1 to wait.
lock_opt=(--no-wait)
if [ "${HARNESS_SCHEDULE_WAIT:-0}" = 1 ]; then
    lock_opt=()
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"${harness_cmd[@]}" run "$suite" "${lock_opt[@]}" "$@" 2>"$tmp/run.err" | tee "$tmp/run.out"
run_status=${PIPESTATUS[0]}
cat "$tmp/run.err" >&2

if [ "$run_status" -eq 2 ] && grep -q "another run is measuring on this machine" "$tmp/run.err"; then
    echo "scheduled-run: skipped: another run holds this machine's lock" >&2
    exit 75
fi
# the run prints its run folder as its last line
run_dir=$(grep -v '^[[:space:]]*$' "$tmp/run.out" | tail -n 1)
if [ -z "$run_dir" ] || [ ! -f "$run_dir/manifest.json" ]; then
    echo "scheduled-run: harness run ended with status $run_status and no run folder" >&2
    exit $(( run_status == 0 ? 2 : run_status ))
fi
if [ "$run_status" -eq 130 ]; then
    echo "scheduled-run: interrupted; partial results in $run_dir" >&2
    exit 130
fi

compare=("${harness_cmd[@]}" compare --baseline latest "$run_dir")
if [ -n "${HARNESS_COMPARE_THRESHOLD:-}" ]; then
    compare+=(--threshold "$HARNESS_COMPARE_THRESHOLD")
fi
"${compare[@]}" >"$tmp/compare.out" 2>"$tmp/compare.err"
compare_status=$?
cat "$tmp/compare.out"
if [ "$compare_status" -eq 2 ] && grep -q "no earlier run of suite" "$tmp/compare.err"; then
    echo "scheduled-run: first run of this suite: no baseline to compare with yet (passes)"
    compare_status=0
else
    cat "$tmp/compare.err" >&2
    if [ "$compare_status" -ne 0 ] && [ "$compare_status" -ne 1 ]; then
        echo "scheduled-run: harness compare failed with status $compare_status" >&2
        exit "$compare_status"
    fi
    if [ -d "$run_dir/report" ]; then
        # keep the comparison beside the report (temporary file, then rename: never half a file)
        cp "$tmp/compare.out" "$run_dir/report/.compare.txt.tmp" &&
            mv -f "$run_dir/report/.compare.txt.tmp" "$run_dir/report/compare.txt"
    fi
fi

echo "$run_dir"
if [ "$compare_status" -eq 1 ]; then
    echo "scheduled-run: REGRESSION against the previous run (see above)" >&2
    exit 1
fi
if [ "$run_status" -ne 0 ]; then
    echo "scheduled-run: some cases failed (harness run exit $run_status)" >&2
    exit 1
fi
exit 0
