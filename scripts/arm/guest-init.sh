#!/bin/sh
# guest-init.sh: PID 1 of the make test-arm guests (installed as
# /sbin/bramble-guest-init by scripts/arm/guest-image.sh; the kernel runs it
# through init= on the guest's cmdline.txt). A stand-in for the init system
# of a Raspberry Pi OS Lite: it mounts what systemd would, the boot partition
# at /boot/firmware (where install.sh's INSTALL_BRAMBLE_FIX_CGROUPS edits
# cmdline.txt), the job disk the harness wrote, and runs its job.sh under
# tini, which reaps orphans (containerd's shims) as an init must. No systemd
# and no OpenRC: install.sh takes its no-init path.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mnt() { # mnt DIR ARGS...: mount ARGS on DIR unless something is there
	d=$1
	shift
	mkdir -p "$d"
	mountpoint -q "$d" || mount "$@" "$d"
}

mount -o remount,rw /
mnt /proc -t proc proc
mnt /sys -t sysfs sysfs
mnt /dev -t devtmpfs devtmpfs
mnt /dev/pts -t devpts devpts
mnt /dev/shm -t tmpfs tmpfs
mnt /run -t tmpfs -o mode=0755 tmpfs
mnt /sys/fs/cgroup -t cgroup2 cgroup2
# systemd makes / shared; kubelet's volume mounts need it.
mount --make-rshared /
modprobe -a vfat nls_cp437 nls_ascii nls_utf8 2>/dev/null
mnt /boot/firmware -t vfat LABEL=BOOT
mnt /mnt/job -o ro LABEL=BRAMBLE-JOB
mnt /mnt/out -t vfat LABEL=OUT
ip link set lo up
if [ ! -x /mnt/job/job.sh ]; then
	echo "bramble-guest-init: no job disk (LABEL=BRAMBLE-JOB with job.sh)" >&2
	echo o >/proc/sysrq-trigger
fi
exec /usr/bin/tini -- /mnt/job/job.sh
