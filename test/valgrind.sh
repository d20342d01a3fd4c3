#!/usr/bin/env bash
#
# test/valgrind.sh [--tap]: run the pg_regress and isolation tests (and with
# --tap the TAP tests too) with every server process under Valgrind
# memcheck.  Not part of scripts/test: it takes tens of minutes.
#
# Debian's postgres is not built with USE_VALGRIND, so memcheck sees
# malloc blocks, not palloc chunks: it finds reads of uninitialised memory,
# reads and writes outside malloc'd or mapped memory (libcurl, OpenSSL and
# our own malloc'd buffers) and use of freed malloc blocks, but not an
# overrun that stays inside a memory context block.
#
# How: a private copy of the PostgreSQL installation under a temporary
# directory (bin, lib and share, so the system install and the other
# trees' tests are not touched), the extension built with the usual flags
# and installed there with DESTDIR, and its "postgres" replaced by a
# wrapper that runs the real binary under valgrind (initdb's bootstrap and
# single-user runs and version checks run without it).  "make installcheck"
# then runs with bindir pointing at that copy, as the test user.
#
# Result: each valgrind error is classified by whether otp_link.so appears
# in its stack or in the origin of the uninitialised value.  Any such
# error, any test failure, or a process killed by a signal under valgrind
# fails the run.  Known false positives of PostgreSQL itself (Debian ships
# no valgrind.supp) are suppressed by test/valgrind.supp; other errors
# without our frames are counted and shown, not judged.  Under valgrind the TAP
# tests' timing assertions (latency under 2 s, fixed sleeps) can fail;
# with --tap only their valgrind errors are judged and their failures are
# reported.
#
# The logs are kept in the printed directory when the run fails
# (OTP_LINK_KEEP=1 keeps them always).
#
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
. scripts/lib.sh

tap=0
case "${1:-}" in
	--tap) tap=1 ;;
	"") ;;
	*)
		echo "usage: $0 [--tap]" >&2
		exit 2
		;;
esac

scripts/setup valgrind

bindir=$(pg_config --bindir)
pgdir=$(dirname "$bindir")
sharedir=$(pg_config --sharedir)
case "$(pg_config --pkglibdir)" in
	"$pgdir"/*) ;;
	*)
		echo "test/valgrind.sh: expects pkglibdir under $pgdir (Debian's layout)" >&2
		exit 1
		;;
esac

work=$(mktemp -d /tmp/otp_link-valgrind.XXXXXX)
inst="$work/inst"
vglogs="$work/valgrind"
keep=${OTP_LINK_KEEP:-0}
cleanup() {
	if [ "$keep" = 1 ]; then
		echo "valgrind: logs kept in $vglogs"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# the private installation and the tree to build
mkdir -p "$inst$(dirname "$pgdir")" "$inst$(dirname "$sharedir")" "$vglogs" "$work/src"
cp -a "$pgdir" "$inst$pgdir"
cp -a "$sharedir" "$inst$sharedir"
tar -C "$top" --exclude=.git --exclude=node_modules --exclude=.demo \
	--exclude=test/fuzz/build --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude='tmp_check*' -cf - . | tar -C "$work/src" -xf -

# the server under valgrind
vgopts="--quiet --trace-children=yes --track-origins=yes --num-callers=40"
vgopts+=" --leak-check=no --error-limit=no"
vgopts+=" --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END --fullpath-after="
vgopts+=" --log-file=$vglogs/%p.log --suppressions=$work/src/test/valgrind.supp"
mv "$inst$bindir/postgres" "$inst$bindir/postgres.real"
cat >"$inst$bindir/postgres" <<EOF
#!/bin/sh
# written by otp_link's test/valgrind.sh: the server under valgrind
real="\$(dirname "\$0")/postgres.real"
case "\$1" in
--boot|--single|--check|-V|--version|-C|--describe-config)
	exec "\$real" "\$@" ;;
esac
exec valgrind $vgopts "\$real" "\$@"
EOF
chmod 755 "$inst$bindir/postgres"

if [ "$(id -u)" -eq 0 ]; then
	chown -R "$OTP_LINK_TEST_USER" "$work"
fi

# build with the usual flags, install into the private copy
"${AS_USER[@]}" make -s -C "$work/src" COPT="${COPT:--Werror}" >/dev/null
"${AS_USER[@]}" make -s -C "$work/src" install DESTDIR="$inst" >/dev/null

start=$(date +%s)
run_make() {
	"${AS_USER[@]}" env PGCTLTIMEOUT=900 PG_TEST_TIMEOUT_DEFAULT=900 \
		make -C "$work/src" -s installcheck bindir="$inst$bindir" "$@"
}
tests_status=0
run_make TAP_TESTS= || tests_status=$?
tap_status=0
if [ "$tap" = 1 ]; then
	run_make REGRESS= ISOLATION= PROVE_FLAGS="${PROVE_FLAGS:-}" || tap_status=$?
fi
elapsed=$(( $(date +%s) - start ))

if [ "$tests_status" -ne 0 ]; then
	for f in "$work"/src/regression.diffs "$work"/src/output_iso/regression.diffs; do
		[ -f "$f" ] && { echo "==== $f"; head -n 200 "$f"; }
	done
fi

# classify the errors: ours when a frame of the stack or of the origin is
# in our sources (full paths: --fullpath-after=) or in otp_link.so
nprocs=$(find "$vglogs" -name '*.log' | wc -l)
report=$(find "$vglogs" -name '*.log' -size +0 -print0 | xargs -0 -r awk \
	-v src="$work/src/src/" -v so="/otp_link.so" '
	/VALGRINDERROR-BEGIN/ { inblock = 1; block = ""; next }
	/VALGRINDERROR-END/ {
		inblock = 0
		if (index(block, src) || index(block, so)) { ours++; print "==== otp_link error in " FILENAME; print block }
		else { others++; if (others <= 5) { print "==== other error in " FILENAME; print block } }
		next
	}
	inblock { block = block $0 "\n"; next }
	/Process terminating with default action/ { killed++; print "==== killed in " FILENAME ": " $0 }
	END { printf "SUMMARY ours=%d others=%d killed=%d\n", ours, others, killed }')
# (xargs may run awk more than once: add up its SUMMARY lines)
echo "$report" | grep -v '^SUMMARY' | head -n 400 || true
count() {
	echo "$report" | sed -n "s/^SUMMARY.* $1=\([0-9]*\).*/\1/p" | awk '{ n += $1 } END { print n + 0 }'
}
ours=$(count ours)
others=$(count others)
killed=$(count killed)

echo "valgrind: $nprocs server processes, $elapsed s; errors involving otp_link.so: $ours," \
	"other errors: $others, killed by a signal: $killed;" \
	"regress+isolation: $([ "$tests_status" -eq 0 ] && echo passed || echo FAILED)" \
	"$([ "$tap" = 1 ] && { [ "$tap_status" -eq 0 ] && echo "; TAP: passed" || echo "; TAP: FAILED (not judged)"; })"

status=0
if [ "$ours" -ne 0 ] || [ "$killed" -ne 0 ]; then
	status=1
fi
if [ "$tests_status" -ne 0 ]; then
	status=1
fi
if [ "$status" -ne 0 ]; then
	keep=1
	echo "test/valgrind.sh: FAILED" >&2
fi
exit "$status"
