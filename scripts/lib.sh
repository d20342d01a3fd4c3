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
