#!/usr/bin/env bash
#
# test/package.sh: build the Debian package and install it in a clean chroot.
#
# Builds postgresql-15-otp-link natively with "dpkg-buildpackage -us -uc -b"
# in a copy of the tree (nothing lands in the repository), then, in a
# throw-away copy (an overlay) of a minimal Debian bookworm chroot cached in
# $OTP_LINK_MATRIX_CACHE/bookworm-pkg (default
# /var/cache/otp_link-matrix/bookworm-pkg; made once with debootstrap
# --variant=minbase, with the archives of postgresql-15 and libcurl4
# downloaded into it), installs the package with
# "apt-get install ./postgresql-15-otp-link_*.deb" (apt pulls in
# postgresql-15 and libcurl4), starts a cluster as the chroot's postgres user
# with shared_preload_libraries = 'otp_link', and checks CREATE EXTENSION,
# extversion 1.1, the worker, one generate and one consume ("verified"), and
# that purging the package removes its files.
#
# Runs as root.  Last line: "package: N passed, M failed"; exits non-zero on
# a failure.  On exit (even Ctrl-C) kills what runs in the chroot, undoes the
# mounts and removes the temporary folder.
#
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
. test/chroot_lib.sh

if [ "$(id -u)" -ne 0 ]; then
	echo "test/package.sh: needs root (dpkg-buildpackage deps, debootstrap, chroot, mount)" >&2
	echo "package: 0 passed, 1 failed"
	exit 1
fi

major=15
base="$cache/bookworm-pkg"
work=$(mktemp -d /tmp/otp_link-package.XXXXXX)
passed=0
failed=0

finish() {
	chroot_cleanup
	rm -rf "$work"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
check() {	# check NAME COMMAND...: ok if COMMAND succeeds
	local name="$1"; shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}
report() {
	echo "package: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

# ---------------------------------------------------------------- build
need=()
for p in dpkg-dev debhelper fakeroot postgresql-server-dev-all libcurl4-openssl-dev pkg-config; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
	echo "package: installing build tools: ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
start=$(date +%s)
copy_tree "$top" "$work/src/otp-link"
if (cd "$work/src/otp-link" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	debs=("$work/src/postgresql-$major-otp-link_"*.deb)
	check "dpkg-buildpackage built postgresql-$major-otp-link ($(($(date +%s) - start)) s)" test -f "${debs[0]}"
else
	tail -n 40 "$work/build.log"
	not_ok "dpkg-buildpackage"
	report
	exit 1
fi
deb="${debs[0]}"
contents=$(dpkg-deb -c "$deb")
check "the package holds otp_link.so and the extension scripts" \
	bash -c 'grep -q "usr/lib/postgresql/$1/lib/otp_link.so$" <<<"$2" &&
		grep -q "usr/share/postgresql/$1/extension/otp_link--1.0--1.1.sql$" <<<"$2"' _ "$major" "$contents"

# ---------------------------------------------------------------- chroot
mkdir -p "$cache"
exec 9>"$cache/bookworm-pkg.lock"
flock 9
if [ ! -f "$base/.otp_link-package-ready" ]; then
	start=$(date +%s)
	if ! chroot_debootstrap bookworm "$base"; then
		not_ok "debootstrap bookworm"
		report
		exit 1
	fi
	chroot_quiet_postgres "$base"
	# the host's sources (bookworm, bookworm-updates, bookworm-security): the
	# package depends on the host's postgresql-15 version or later
	rm -f "$base/etc/apt/sources.list" "$base"/etc/apt/sources.list.d/*
	cp /etc/apt/sources.list.d/*.sources "$base/etc/apt/sources.list.d/" 2>/dev/null || true
	[ ! -f /etc/apt/sources.list ] || grep -qE '^\s*deb\s' /etc/apt/sources.list &&
		cp /etc/apt/sources.list "$base/etc/apt/sources.list" 2>/dev/null || true
	chroot_mount "$base"
	# download only: each run installs them into its own overlay
	if ! { in_chroot apt-get update -qq &&
		in_chroot apt-get install -y -qq --no-install-recommends --download-only \
			"postgresql-$major" libcurl4; } >"$base.packages.log" 2>&1; then
		tail -n 30 "$base.packages.log"
		chroot_cleanup
		not_ok "chroot apt-get update / download"
		report
		exit 1
	fi
	chroot_cleanup
	touch "$base/.otp_link-package-ready"
	echo "package: chroot $base prepared in $(($(date +%s) - start)) s"
fi

# a throw-away copy of the cached chroot: an overlay, or a plain copy
mkdir -p "$work/upper" "$work/ovl" "$work/root"
if mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/ovl" "$work/root" 2>/dev/null; then
	chroot_add_mount "$work/root"
else
	cp -a "$base/." "$work/root/"
fi
chroot_mount "$work/root"
exec 9>&-	# the cache is only read from now on (overlay) or was copied

cp "$deb" "$root/tmp/"
debname=$(basename "$deb")
check "libcurl4 and postgresql-$major are not installed before" \
	bash -c "! chroot '$root' dpkg -s libcurl4 >/dev/null 2>&1 && ! chroot '$root' dpkg -s postgresql-$major >/dev/null 2>&1"
if in_chroot apt-get install -y -q --no-install-recommends "/tmp/$debname" >"$work/install.log" 2>&1; then
	ok "apt-get install ./$debname"
else
	tail -n 30 "$work/install.log"
	not_ok "apt-get install ./$debname"
	report
	exit 1
fi
check "apt pulled in libcurl4 and postgresql-$major" \
	bash -c "chroot '$root' dpkg -s libcurl4 >/dev/null && chroot '$root' dpkg -s postgresql-$major >/dev/null"

# ---------------------------------------------------------------- cluster
bin="/usr/lib/postgresql/$major/bin"
pg() { in_chroot runuser -u postgres -- "$@"; }
sql() { in_chroot runuser -u postgres -- "$bin/psql" -h /tmp -p 5439 -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
pg "$bin/initdb" -D /tmp/pgdata -A trust >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log"; }
cat >>"$root/tmp/pgdata/postgresql.conf" <<CONF
listen_addresses = ''
port = 5439
unix_socket_directories = '/tmp'
shared_preload_libraries = 'otp_link'
otp_link.database = 'postgres'
CONF
if pg "$bin/pg_ctl" -D /tmp/pgdata -l /tmp/pg.log -w start >/dev/null 2>&1; then
	ok "cluster starts with shared_preload_libraries = 'otp_link'"
else
	cat "$root/tmp/pg.log" 2>/dev/null || true
	not_ok "cluster starts with shared_preload_libraries = 'otp_link'"
	report
	exit 1
fi

check "CREATE EXTENSION otp_link" sql "CREATE EXTENSION otp_link"
v=$(sql "SELECT extversion FROM pg_extension WHERE extname = 'otp_link'" || true)
check "extversion = 1.1 (got '$v')" test "$v" = 1.1
w=""
for _ in $(seq 1 50); do
	w=$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'otp_link worker'" || true)
	[ "$w" = 1 ] && break
	sleep 0.2
done
check "the otp_link worker runs" test "$w" = 1
inst=$(sql "SELECT otp_link.otp_link_instance_create('+44 7700 900123', 'package')->>'uuid'" || true)
code=$(sql "SELECT otp_link.otp_link_generate(instance => '$inst', expires => 600)->>'code'" || true)
check "instance created and code generated ('$code')" bash -c "[[ '$code' =~ ^[A-Z0-9]{4,}$ ]]"
out=$(sql "SELECT otp_link.otp_link_consume_message('447700900123', 'hi [$code]')->>'outcome'" || true)
check "consume: outcome verified (got '$out')" test "$out" = verified
pg "$bin/pg_ctl" -D /tmp/pgdata -m fast -w stop >/dev/null 2>&1 || true

if in_chroot apt-get purge -y -q "postgresql-$major-otp-link" >"$work/purge.log" 2>&1 &&
	[ ! -e "$root/usr/lib/postgresql/$major/lib/otp_link.so" ] &&
	[ ! -e "$root/usr/share/postgresql/$major/extension/otp_link.control" ]; then
	ok "apt-get purge removes the package's files"
else
	tail -n 20 "$work/purge.log"
	not_ok "apt-get purge removes the package's files"
fi

report
