# test/chroot_lib.sh: chroot helpers for test/package.sh and
# test/major_upgrade.sh (sourced; runs as root).  The same approach as
# scripts/matrix: Debian chroots made once with "debootstrap
# --variant=minbase" and cached in $OTP_LINK_MATRIX_CACHE (default
# /var/cache/otp_link-matrix), /proc, /dev/shm and /dev/pts mounted while in
# use, and on exit every process whose root is the chroot killed and the
# mounts undone (chroot_cleanup; the caller sets the EXIT trap).

cache="${OTP_LINK_MATRIX_CACHE:-/var/cache/otp_link-matrix}"

# the host's Debian mirror: the first "deb" source of the main archive
host_mirror() {
	local url
	url=$( { grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '{print $2}'
		grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -E 's/\[[^]]*\]//' | awk '{print $2}'
		} | grep -E '/debian/?$' | head -n 1 || true)
	echo "${url:-http://deb.debian.org/debian}"
}

# the chroot in use (global, for the EXIT trap) and its mounts, last undone first
root=""
chroot_mounts=()

chroot_add_mount() { chroot_mounts+=("$1"); }

chroot_cleanup() {
	local p r i
	if [ -n "$root" ]; then
		for _ in 1 2 3; do
			local found=0
			for p in /proc/[0-9]*; do
				r=$(readlink "$p/root" 2>/dev/null) || continue
				if [ "$r" = "$root" ]; then
					kill -KILL "${p#/proc/}" 2>/dev/null || true
					found=1
				fi
			done
			[ "$found" -eq 1 ] || break
			sleep 0.5
		done
	fi
	for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do
		umount "${chroot_mounts[i]}" 2>/dev/null || umount -l "${chroot_mounts[i]}" 2>/dev/null || true
	done
	chroot_mounts=()
	root=""
}

# mount /proc, /dev/shm and /dev/pts into the chroot $1 and make it current
chroot_mount() {
	root=$(realpath "$1")
	mount -t proc proc "$root/proc"
	chroot_add_mount "$root/proc"
	mkdir -p "$root/dev/shm" "$root/dev/pts"
	mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
	chroot_add_mount "$root/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
	chroot_add_mount "$root/dev/pts"
}

# run a command inside the current chroot with a clean environment
in_chroot() {
	chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# debootstrap SUITE into DIR unless it is there (log in $cache/SUITE-NAME.log)
chroot_debootstrap() {
	local suite="$1" dir="$2" mirror start log
	[ -d "$dir" ] && return 0
	mirror=$(host_mirror)
	log="$dir.log"
	if ! command -v debootstrap >/dev/null; then
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends debootstrap >/dev/null
	fi
	if grep -q " $dir.new/" /proc/mounts; then
		echo "chroot: $dir.new has mounts, not touching it" >&2
		return 1
	fi
	rm -rf "$dir.new"
	start=$(date +%s)
	echo "chroot: debootstrap $suite from $mirror into $dir"
	if ! debootstrap --variant=minbase "$suite" "$dir.new" "$mirror" >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		echo "chroot: debootstrap failed (log: $log)" >&2
		return 1
	fi
	mv "$dir.new" "$dir"
	echo "chroot: debootstrap $suite took $(($(date +%s) - start)) s"
}

# the chroot settings of scripts/matrix: no service starts, no "main" cluster
chroot_quiet_postgres() {
	local dir="$1"
	cp /etc/resolv.conf "$dir/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 755 "$dir/usr/sbin/policy-rc.d"
	mkdir -p "$dir/etc/postgresql-common"
	echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"
}

# copy the working tree of $1 (tracked files and untracked ones not ignored,
# as they are on disk) into the folder $2
copy_tree() {
	local f
	mkdir -p "$2"
	git -C "$1" ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			[ -f "$1/$f" ] && printf '%s\0' "$f"
		done |
		tar -C "$1" --null -T - -cf - | tar -C "$2" -xf -
}
