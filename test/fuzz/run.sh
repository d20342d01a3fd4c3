#!/usr/bin/env bash
#
# test/fuzz/run.sh [seconds-per-target]: fuzz the text functions of
# src/text.c with libFuzzer.
#
# Installs clang and libFuzzer if missing (scripts/setup), builds the
# targets into test/fuzz/build/ and runs each one for the given number of
# seconds (default 10) over its seed corpus in test/fuzz/corpus/<target>/.
# The seeds are never modified: new inputs go to a temporary directory
# that is removed afterwards.  Exits non-zero if any target finds a crash,
# a leak, undefined behaviour or a failed property; the input that did it
# is kept in test/fuzz/build/artifacts/<target>/.
#
#   test/fuzz/run.sh          smoke run, about 1 minute (scripts/test)
#   test/fuzz/run.sh 600      ten minutes per target
#
# OTP_LINK_FUZZ_KEEP=<dir> keeps the inputs libFuzzer found in
# <dir>/<target>/ instead of throwing them away (to measure coverage or to
# pick new seeds by hand; the seeds in corpus/ stay small on purpose).
#
set -euo pipefail
keep="${OTP_LINK_FUZZ_KEEP:-}"
if [ -n "$keep" ]; then
	mkdir -p "$keep"
	keep=$(cd "$keep" && pwd)
fi
cd "$(dirname "$0")"

secs="${1:-10}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: $0 [seconds-per-target]" >&2
	exit 2
fi

TARGETS=(fuzz_extract_code fuzz_urlencode fuzz_template fuzz_phone fuzz_url)

../../scripts/setup clang libclang-rt-14-dev
make -s

if [ -n "$keep" ]; then
	work="$keep"
else
	work=$(mktemp -d /tmp/otp_link-fuzz.XXXXXX)
	trap 'rm -rf "$work"' EXIT
fi

status=0
for t in "${TARGETS[@]}"; do
	mkdir -p "$work/$t" "build/artifacts/$t"
	log="build/$t.log"
	# the first directory receives new inputs, the second is only read
	if "build/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
		-print_final_stats=1 -artifact_prefix="build/artifacts/$t/" \
		"$work/$t" "corpus/$t" >"$log" 2>&1; then
		result=ok
	else
		result=FAILED
		status=1
	fi
	done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
	echo "fuzz: $t: $result ${done_line:-(no DONE line)}"
	if [ "$result" != ok ]; then
		grep -E 'ERROR|SUMMARY|fuzz property failed|runtime error|Test unit written' "$log" >&2 || true
		echo "fuzz: full log in test/fuzz/$log" >&2
	fi
done

if [ "$status" -ne 0 ]; then
	echo "test/fuzz/run.sh: FAILED" >&2
fi
exit "$status"
