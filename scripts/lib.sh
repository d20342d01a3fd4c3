# scripts/lib.sh: helpers shared by scripts/test and scripts/demo (sourced).
#
# PostgreSQL refuses to run a cluster as root, so as root the clusters run
# as an unprivileged user (OTP_LINK_TEST_USER, default "postgres") while
# "make install" runs as root; as a normal user, install goes through sudo.

OTP_LINK_TEST_USER="${OTP_LINK_TEST_USER:-postgres}"

if [ "$(id -u)" -eq 0 ]; then
	AS_ROOT=()
	AS_USER=(runuser -u "$OTP_LINK_TEST_USER" --)
else
	AS_ROOT=(sudo)
	AS_USER=()
fi

# build and install the extension from the tree in $1
build_and_install() {
	make -s -C "$1" COPT="${COPT:--Werror}" >/dev/null
	"${AS_ROOT[@]}" make -s -C "$1" install >/dev/null
}

# count_results LOG [STATUS]: "N M", the tests passed and failed in LOG, the
# output of "make installcheck": pg_regress and isolation ("All N tests
# passed." / "M of N tests failed.", with a "# " in front since 16) and prove
# ("Tests=N", "Failed: M").  A non-zero STATUS counts at least one failure.
count_results() {
	local passed failed
	passed=$(( $(_matches '^[#\s]*All \K[0-9]+(?= tests passed)' <"$1" | _sum) +
		$(_matches 'Files=[0-9]+, Tests=\K[0-9]+' <"$1" | _sum) ))
	failed=$(( $(_matches '^[#\s]*\K[0-9]+(?= of [0-9]+ tests failed)' <"$1" | _sum) +
		$(_matches 'Failed: \K[0-9]+' <"$1" | _sum) ))
	[ "${2:-0}" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
	echo "$passed $failed"
}
_sum() { paste -sd+ | sed 's/^$/0/' | bc; }
_matches() { grep -oP "$1" || true; }
