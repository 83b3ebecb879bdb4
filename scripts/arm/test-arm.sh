#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# test-arm.sh ARCH: make test-arm. Boots Debian bookworm guests of ARCH
# (arm64 or armhf) in full-system emulation (qemu-system-aarch64 /
# qemu-system-arm, TCG), installs the release artifacts of ARCH with the real
# install.sh (air-gapped, no init system) and checks a cluster on them:
#   1. server, first boot: cmdline.txt has cgroup_disable=memory (a Pi
#      without the memory cgroup); install.sh with INSTALL_BRAMBLE_FIX_CGROUPS
#      edits the guest's /boot/firmware/cmdline.txt, the guest reboots;
#   2. server, second boot with that cmdline.txt: bramble server starts, the
#      node gets Ready, CoreDNS resolves, /parity?int=15 is odd through
#      Traefik, /parity answers while a /wait is in flight;
#   3. agent (unless AGENT=false): the same first boot, then it joins the
#      server over a network between the two guests only (qemu socket
#      netdev on 127.0.0.1), resolves through CoreDNS on the server (flannel
#      vxlan) and the server sees both nodes Ready.
# Each phase's wall time is printed, never asserted. A failure keeps the run
# directory (guest consoles, bramble's and install.sh's logs) and prints its
# path; a passing run removes it. Disk images of a run are always removed;
# the guest image ($CACHE_DIR/arm, scripts/arm/guest-image.sh) is kept.
#
# Inputs: dist/bramble-<arch> and dist/bramble-airgap-images-<arch>.tar.zst
# (make release-bin-<arch> and make airgap; mk/arm.mk builds them).
# Environment: DIST_DIR (where the artifacts are, default dist/), AGENT=false (server only), READY_TIMEOUT, CHECK_TIMEOUT,
# JOIN_TIMEOUT (seconds, in the guest), INSTALL_TIMEOUT (seconds per first
# boot), QEMU_SMP, QEMU_MEM (MiB).
set -euo pipefail

ARCH=${1:?usage: test-arm.sh arm64|armhf}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
DIST=${DIST_DIR:-$REPO_ROOT/dist}
AGENT=${AGENT:-true}
READY_TIMEOUT=${READY_TIMEOUT:-3600}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-2400}
JOIN_TIMEOUT=${JOIN_TIMEOUT:-3600}
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-1800}
QEMU_SMP=${QEMU_SMP:-2}
QEMU_MEM=${QEMU_MEM:-2048}

log() { printf '[test-arm %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[test-arm] error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
arm64)
	QEMU=(qemu-system-aarch64 -M virt -cpu cortex-a72)
	tarball=bramble-airgap-images-arm64.tar.zst
	;;
armhf)
	# highmem=off: the LPAE kernel then finds all its RAM below 4 GiB.
	QEMU=(qemu-system-arm -M "virt,highmem=off" -cpu cortex-a15)
	tarball=bramble-airgap-images-arm.tar.zst # make airgap names it by Go's arch
	[ -f "$DIST/$tarball" ] || tarball=bramble-airgap-images-armhf.tar.zst
	;;
*) die "unsupported ARCH '$ARCH' (want arm64 or armhf)" ;;
esac
for c in "${QEMU[0]}" qemu-img mkfs.vfat mkfs.ext4 mcopy mtype; do
	command -v "$c" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
	command -v "$c" >/dev/null 2>&1 || die "$c is missing (make arm-deps installs it)"
done
for f in "bramble-$ARCH" "$tarball"; do
	[ -f "$DIST/$f" ] || die "$DIST/$f is missing (make test-arm ARCH=$ARCH builds it)"
done

t_all=$(date +%s)
guest=$("$HERE/guest-image.sh" "$ARCH")
log "guest image: $guest"

RUN=$(mktemp -d "/tmp/bramble-test-arm-$ARCH.XXXXXX")
chmod 0700 "$RUN"
declare -A QPID=()
ok=false
cleanup() {
	local n
	for n in "${!QPID[@]}"; do
		kill "${QPID[$n]}" 2>/dev/null || true
		wait "${QPID[$n]}" 2>/dev/null || true
	done
	for n in server agent; do
		if [ -f "$RUN/$n-out.img" ]; then
			mkdir -p "$RUN/$n"
			mcopy -n -s -i "$RUN/$n-out.img" '::*' "$RUN/$n/" 2>/dev/null || true
		fi
	done
	for n in server agent; do
		if [ -f "$RUN/$n-console.log.part" ]; then
			cat "$RUN/$n-console.log.part" >>"$RUN/$n-console.log"
			rm -f "$RUN/$n-console.log.part"
		fi
	done
	rm -f "$RUN"/*.img "$RUN"/*.qcow2
	rm -rf "$RUN/job"
	if $ok; then
		rm -rf "$RUN"
	else
		log "FAILED; logs kept in $RUN:"
		find "$RUN" -type f -name '*.log' -o -type f -name 'diag.txt' | sort | sed 's/^/    /' >&2
	fi
}
trap cleanup EXIT

# The job disk, shared read-only by both guests: the job script, install.sh
# and the artifacts as a release lists them.
mkdir -p "$RUN/job/artifacts"
install -m 0755 "$HERE/guest-job.sh" "$RUN/job/job.sh"
install -m 0755 "$REPO_ROOT/install.sh" "$RUN/job/install.sh"
ln "$DIST/bramble-$ARCH" "$RUN/job/artifacts/" 2>/dev/null || cp "$DIST/bramble-$ARCH" "$RUN/job/artifacts/"
ln "$DIST/$tarball" "$RUN/job/artifacts/bramble-airgap-images-$ARCH.tar.zst" 2>/dev/null ||
	cp "$DIST/$tarball" "$RUN/job/artifacts/bramble-airgap-images-$ARCH.tar.zst"
(cd "$RUN/job/artifacts" && sha256sum "bramble-$ARCH" "bramble-airgap-images-$ARCH.tar.zst" >"sha256sum-$ARCH.txt")
size=$(($(du -sm "$RUN/job" | cut -f1) + 64))
mkfs.ext4 -q -L BRAMBLE-JOB -d "$RUN/job" "$RUN/job.img" "${size}M" >/dev/null
rm -rf "$RUN/job"

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The guests' network: qemu socket netdevs sending UDP datagrams to each
# other on 127.0.0.1 (stateless: either guest may reboot), nothing else.
port=$((20000 + RANDOM % 20000))
net_server="udp=127.0.0.1:$((port + 1)),localaddr=127.0.0.1:$port"
net_agent="udp=127.0.0.1:$port,localaddr=127.0.0.1:$((port + 1))"

# make_guest NAME ROLE IP: its disks. The boot partition (FAT, like a Pi's)
# holds cmdline.txt and the job's settings; the OUT disk collects its logs.
make_guest() {
	local n=$1 role=$2 ip=$3
	qemu-img create -q -f qcow2 -F raw -b "$guest/root.img" "$RUN/$n-root.qcow2"
	mkfs.vfat -n BOOT -C "$RUN/$n-boot.img" 32768 >/dev/null
	printf '%s\n' "console=ttyAMA0 root=/dev/vda rw rootwait quiet cgroup_disable=memory init=/sbin/bramble-guest-init" >"$RUN/cmdline.txt"
	umask 077
	cat >"$RUN/test.env" <<-ENV
		ROLE=$role
		NAME=arm-$n
		IP=$ip
		GATEWAY=10.77.0.254
		SERVER_IP=10.77.0.1
		TOKEN=$token
		NODES=$([ "$AGENT" = true ] && echo 2 || echo 1)
		READY_TIMEOUT=$READY_TIMEOUT
		CHECK_TIMEOUT=$CHECK_TIMEOUT
		JOIN_TIMEOUT=$JOIN_TIMEOUT
	ENV
	umask 022
	mcopy -i "$RUN/$n-boot.img" "$RUN/cmdline.txt" ::/cmdline.txt
	mcopy -i "$RUN/$n-boot.img" "$RUN/test.env" ::/bramble-test.env
	rm -f "$RUN/cmdline.txt" "$RUN/test.env"
	mkfs.vfat -n OUT -C "$RUN/$n-out.img" 1048576 >/dev/null
}

# boot NAME NET MAC: (NET: the socket netdev's options) starts the guest's qemu with the kernel command
# line from its boot partition's cmdline.txt (a Pi's firmware does the same).
# The root overlay is a throwaway: cache=unsafe drops the guest's flushes
# (SQLite's fsyncs) instead of making the host's busy disk sync each one.
boot() {
	local n=$1 net=$2 mac=$3 append
	append=$(mtype -i "$RUN/$n-boot.img" ::/cmdline.txt | head -n1 | tr -d '\r')
	log "$n: booting with cmdline.txt: $append"
	nice -n 10 "${QEMU[@]}" -smp "$QEMU_SMP" -m "$QEMU_MEM" \
		-kernel "$guest/vmlinuz" -initrd "$guest/initrd.img" -append "$append" \
		-drive "file=$RUN/$n-root.qcow2,format=qcow2,if=none,id=root,cache=unsafe" -device virtio-blk-pci,drive=root \
		-drive "file=$RUN/$n-boot.img,format=raw,if=none,id=boot" -device virtio-blk-pci,drive=boot \
		-drive "file=$RUN/job.img,format=raw,if=none,id=job,readonly=on" -device virtio-blk-pci,drive=job \
		-drive "file=$RUN/$n-out.img,format=raw,if=none,id=out" -device virtio-blk-pci,drive=out \
		-netdev "socket,id=net,$net" -device "virtio-net-pci,netdev=net,mac=$mac,romfile=" \
		-display none -monitor none -serial "file:$RUN/$n-console.log.part" -no-reboot \
		</dev/null >>"$RUN/$n-qemu.log" 2>&1 &
	QPID[$n]=$!
}

# console NAME: the guest's console so far (all boots).
console() {
	local f
	for f in "$RUN/$1-console.log" "$RUN/$1-console.log.part"; do
		if [ -f "$f" ]; then tr -d '\r' <"$f"; fi
	done
	return 0
}

# wait_event NAME PATTERN SECONDS: waits for "@@bramble-arm PATTERN" on
# NAME's console; fails on a FAIL line, a qemu exit or the timeout.
wait_event() {
	local n=$1 pat=$2 limit=$3 t0 c
	t0=$(date +%s)
	while :; do
		# Whole console into a variable: grep -q on a pipe would end the
		# writer early (SIGPIPE), which pipefail reports as a failure.
		c=$(console "$n")
		if grep -q "^@@bramble-arm $pat" <<<"$c"; then
			log "$n: $(grep "^@@bramble-arm $pat" <<<"$c" | tail -n1 | cut -c15-) [wall $(($(date +%s) - t0)) s]"
			return 0
		fi
		if grep -q '^@@bramble-arm FAIL' <<<"$c"; then
			grep '^@@bramble-arm' <<<"$c" >&2
			die "$n: $(grep '^@@bramble-arm FAIL' <<<"$c" | head -n1 | cut -c15-)"
		fi
		if ! kill -0 "${QPID[$n]}" 2>/dev/null; then
			unset "QPID[$n]"
			die "$n: qemu exited while waiting for '$pat'"
		fi
		[ $(($(date +%s) - t0)) -lt "$limit" ] || die "$n: no '$pat' after $limit s"
		sleep 5
	done
}

# first_boot NAME NET MAC: install.sh run, cmdline.txt fixed, reboot =
# qemu exits; the next boot uses the edited cmdline.txt.
first_boot() {
	local n=$1 t0 before after
	t0=$(date +%s)
	before=$(mtype -i "$RUN/$n-boot.img" ::/cmdline.txt)
	boot "$@"
	wait_event "$n" rebooting "$INSTALL_TIMEOUT"
	local i=0
	while kill -0 "${QPID[$n]}" 2>/dev/null && [ $i -lt 120 ]; do
		sleep 1
		i=$((i + 1))
	done
	kill -0 "${QPID[$n]}" 2>/dev/null && die "$n: qemu did not exit on the guest's reboot"
	wait "${QPID[$n]}" || true
	unset "QPID[$n]"
	after=$(mtype -i "$RUN/$n-boot.img" ::/cmdline.txt)
	[ "$before" != "$after" ] || die "$n: cmdline.txt unchanged after install.sh"
	log "$n: cmdline.txt before: $before"
	log "$n: cmdline.txt after:  $after"
	log "$n: first boot + install + reboot took $(($(date +%s) - t0)) s"
	cat "$RUN/$n-console.log.part" >>"$RUN/$n-console.log"
	rm -f "$RUN/$n-console.log.part"
}

log "run directory $RUN (qemu: ${QEMU[*]} -smp $QEMU_SMP -m $QEMU_MEM)"
make_guest server server 10.77.0.1
first_boot server "$net_server" 52:54:00:77:00:01
t0=$(date +%s)
boot server "$net_server" 52:54:00:77:00:01
wait_event server "memory cgroup on" 900
wait_event server "node arm-server Ready" $((READY_TIMEOUT + 300))
wait_event server "CoreDNS resolves plumber-api" $((CHECK_TIMEOUT + 300))
wait_event server "odd through Traefik" $((CHECK_TIMEOUT + 300))
wait_event server "server-ok" $((CHECK_TIMEOUT + 300))
log "server: second boot to all checks passed: $(($(date +%s) - t0)) s"
c=$(console server)
grep '^@@bramble-arm wait-check' <<<"$c" | cut -c15- | sed 's/^/    /' >&2 || true

if [ "$AGENT" = true ]; then
	t0=$(date +%s)
	make_guest agent agent 10.77.0.2
	first_boot agent "$net_agent" 52:54:00:77:00:02
	boot agent "$net_agent" 52:54:00:77:00:02
	wait_event agent "memory cgroup on" 900
	wait_event agent "flannel's vxlan device" $((READY_TIMEOUT + 300))
	wait_event server "2 nodes Ready" $((JOIN_TIMEOUT + 300))
	wait_event agent "agent-ok" $((CHECK_TIMEOUT + 300))
	log "agent: first boot to joined and checked: $(($(date +%s) - t0)) s"
fi
wait_event server finished 600
ok=true
log "PASS: make test-arm ARCH=$ARCH in $(($(date +%s) - t_all)) s"
