#!/bin/busybox sh
# PID 1 of the cgroup-v2 test VM (see docs/testing-v2.md). Runs with busybox only.
#
# Stage 1 (in the initramfs): load the 9p/overlay modules, mount the host's / (virtio-9p,
# read-only) under a tmpfs overlay at /newroot, mount the writable share that carries the
# command, then switch_root into the overlay. Stage 2 (in the new root, same path layout as
# the host): mount the API file systems, a pure cgroup2 hierarchy with the controllers enabled,
# bring up lo, run the command with its output on ttyS1/ttyS2, write its exit code to the
# share and power off. Kernel messages and this script's own notes go to ttyS0.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
B=/run/tophan-vm/bin
SHARE=/run/tophan-vm/share

say() { echo "tophan-vm: $*" >/dev/console; }

fail() {
	say "FAILED: $*"
	echo "tophan-vm: guest setup failed: $*" >/dev/ttyS2 2>/dev/null
	sync
	busybox poweroff -f
	while :; do busybox sleep 1; done
}

stage1() {
	/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /proc /sys /dev /lower /ovl /newroot /share
	/bin/busybox --install -s
	mount -t proc proc /proc || fail "mount /proc"
	mount -t sysfs sysfs /sys || fail "mount /sys"
	mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
	say "stage1 uptime $(cut -d' ' -f1 /proc/uptime)"

	# Module names in dependency order, resolved from modules.dep when the image was built.
	while read -r m; do
		insmod "/modules/$m" || fail "insmod $m"
	done </modules/order

	o9p="trans=virtio,version=9p2000.L,msize=524288"
	i=0
	until mount -t 9p -o "ro,$o9p,cache=loose" hostroot /lower 2>/dev/null; do
		i=$((i + 1))
		[ "$i" -gt 50 ] && fail "mount 9p hostroot"
		usleep 100000
	done
	mount -t 9p -o "$o9p,cache=none" share /share || fail "mount 9p share"
	[ -f /share/config ] || fail "no /share/config"

	mount -t tmpfs -o mode=0755 tophan-vm-upper /ovl || fail "mount tmpfs upper"
	mkdir -p /ovl/upper /ovl/work
	mount -t overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work tophan-vm-root \
		/newroot || fail "mount overlay root"

	for d in proc sys dev; do
		mount --move "/$d" "/newroot/$d" || fail "move /$d"
	done
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || fail "mount /run"
	# shellcheck disable=SC1091
	. /share/config || fail "read config"
	if [ -n "$TVM_KEEP" ]; then
		mkdir -p /ovl/keep && mount --bind "/newroot$TVM_KEEP" /ovl/keep || fail "keep $TVM_KEEP"
	fi
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp || fail "mount /tmp"
	if [ -n "$TVM_KEEP" ]; then
		mkdir -p "/newroot$TVM_KEEP" && mount --move /ovl/keep "/newroot$TVM_KEEP" ||
			fail "restore $TVM_KEEP"
	fi
	mkdir -p "/newroot$B" "/newroot$SHARE"
	mount --move /share "/newroot$SHARE" || fail "move share"
	cp /bin/busybox "/newroot$B/busybox" && cp /init "/newroot/run/tophan-vm/init" ||
		fail "copy init"
	exec switch_root /newroot "$B/busybox" sh /run/tophan-vm/init stage2
	fail "switch_root"
}

stage2() {
	"$B/busybox" --install -s "$B"
	ln -sf busybox "$B/modprobe"
	export PATH="$B"
	# shellcheck disable=SC1091
	. "$SHARE/config" || fail "read config"
	say "stage2 uptime $(cut -d' ' -f1 /proc/uptime)"

	mount --make-rshared / || fail "make / shared"
	mkdir -p /dev/pts /dev/shm /dev/mqueue
	mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts || fail "mount devpts"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm || fail "mount /dev/shm"
	mount -t mqueue mqueue /dev/mqueue || fail "mount mqueue"
	ln -sfn /proc/self/fd /dev/fd
	ln -sfn /proc/self/fd/0 /dev/stdin
	ln -sfn /proc/self/fd/1 /dev/stdout
	ln -sfn /proc/self/fd/2 /dev/stderr

	# Pure cgroup v2, mounted as systemd does, every available controller enabled for children.
	mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 \
		/sys/fs/cgroup || fail "mount cgroup2"
	for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || fail "enable controller $c"
	done

	# The unpacked kernel's modules (in the host cache, visible through 9p) for modprobe.
	kver=$(uname -r)
	if [ -n "$TVM_MODDIR" ] && [ -d "$TVM_MODDIR" ]; then
		mkdir -p "/lib/modules/$kver" && mount --bind "$TVM_MODDIR" "/lib/modules/$kver" ||
			fail "bind modules"
		echo "$B/modprobe" >/proc/sys/kernel/modprobe
	fi

	hostname tophan-vm
	ip link set lo up || fail "lo up"

	stty -F /dev/ttyS1 raw -echo || fail "stty ttyS1"
	stty -F /dev/ttyS2 raw -echo || fail "stty ttyS2"
	if [ -n "$TVM_CGROUP" ]; then
		mkdir -p "/sys/fs/cgroup/$TVM_CGROUP" || fail "mkdir cgroup $TVM_CGROUP"
	fi

	# The command's stdout/stderr are ttys only where the caller's are; otherwise pipes, copied
	# to the serial ports by cat. Merged (2>&1) when the caller's are one file, to keep the order.
	out=/dev/ttyS1
	err=/dev/ttyS2
	copies=""
	if [ "$TVM_OUT_TTY" != 1 ]; then
		out=/run/tophan-vm/out
		mkfifo "$out" && { cat "$out" >/dev/ttyS1; touch "$out.done"; } &
		copies="$copies $out.done"
	fi
	if [ "$TVM_MERGE" != 1 ] && [ "$TVM_ERR_TTY" != 1 ]; then
		err=/run/tophan-vm/err
		mkfifo "$err" && { cat "$err" >/dev/ttyS2; touch "$err.done"; } &
		copies="$copies $err.done"
	fi
	say "running command, uptime $(cut -d' ' -f1 /proc/uptime)"
	if [ "$TVM_MERGE" = 1 ]; then
		"$B/busybox" sh "$SHARE/cmd.sh" </dev/null >"$out" 2>&1
	else
		"$B/busybox" sh "$SHARE/cmd.sh" </dev/null >"$out" 2>"$err"
	fi
	rc=$?
	say "command exited $rc, uptime $(cut -d' ' -f1 /proc/uptime)"
	# Wait for the copies, but not for long: a stray background process may hold the pipes.
	for f in $copies; do
		i=0
		while [ ! -e "$f" ] && [ "$i" -lt 30 ]; do
			usleep 100000
			i=$((i + 1))
		done
	done
	# tcsetattr(TCSADRAIN): wait until the serial ports have sent everything.
	stty -F /dev/ttyS1 raw -echo
	stty -F /dev/ttyS2 raw -echo
	echo "$rc" >"$SHARE/rc.tmp" && mv "$SHARE/rc.tmp" "$SHARE/rc"
	sync
	poweroff -f
	while :; do sleep 1; done
}

case "$1" in
stage2) stage2 ;;
*) stage1 ;;
esac
