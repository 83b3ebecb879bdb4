#!/bin/sh
# guest-job.sh: what a make test-arm guest does, run by its init
# (scripts/arm/guest-init.sh) from the read-only job disk at /mnt/job, which
# also holds install.sh and the release artifacts (artifacts/). Its settings
# come from /boot/firmware/bramble-test.env, written by scripts/arm/test-arm.sh:
#   ROLE      server or agent
#   NAME IP   this node's hostname and address on the guests' network (/24)
#   GATEWAY   default route (an address nobody has: the guests reach no one else)
#   SERVER_IP the server's address (agents)
#   TOKEN     the cluster's join secret (the harness made it for this run)
#   NODES     how many nodes the server waits for, Ready, after its checks
#   READY_TIMEOUT CHECK_TIMEOUT JOIN_TIMEOUT  seconds
# It reports to the console (the harness reads it) with lines
# "@@bramble-arm <event> ...", "@@bramble-arm FAIL <why>" on failure; its
# logs go to the OUT disk at /mnt/out (install.log, bramble.log, diag.txt).
#
# First boot: the kernel command line has cgroup_disable=memory, as on a
# Raspberry Pi. install.sh (air-gapped, no init system) installs bramble and,
# with INSTALL_BRAMBLE_FIX_CGROUPS=true, edits /boot/firmware/cmdline.txt;
# the guest reboots (qemu exits, the harness boots it again with the new
# cmdline.txt). Second boot: the memory cgroup is on; bramble starts the way
# install.sh's no-init message says, then the role's checks run.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
OUT=/mnt/out
STATE=/var/lib/bramble-arm-test
DNS_IP=10.43.0.10 # bramble's default: the 10th address of --service-cidr 10.43.0.0/16

say() { printf '@@bramble-arm %s\n' "$*"; }
uptime_s() { cut -d. -f1 /proc/uptime; }

# diagnostics: what a failed run needs, on the OUT disk.
diagnostics() {
	{
		echo "== /proc/cmdline"
		cat /proc/cmdline
		echo "== cgroup.controllers"
		cat /sys/fs/cgroup/cgroup.controllers
		echo "== ip addr / route"
		ip addr
		ip route
		if [ -x /usr/local/bin/bramble ]; then
			echo "== bramble check-config"
			bramble check-config 2>&1
		fi
		if [ -f /etc/bramble/bramble.yaml ]; then
			echo "== nodes"
			kubectl get nodes -o wide 2>&1
			echo "== pods"
			kubectl get pods -A -o wide 2>&1
			echo "== events"
			kubectl get events -A 2>&1 | tail -n 60
		fi
		echo "== ps"
		ps -eo pid,ppid,stat,rss,etime,args 2>&1 | cut -c1-200
		echo "== dmesg"
		dmesg 2>&1 | tail -n 200
	} >"$OUT/diag.txt" 2>&1
}

fail() {
	say "FAIL $*"
	diagnostics
	if [ -f "$OUT/bramble.log" ]; then
		echo "---- last lines of bramble.log"
		tail -n 40 "$OUT/bramble.log"
	fi
	sync
	echo o >/proc/sysrq-trigger
	sleep 60
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 5 s until it succeeds;
# prints how long it took, fails the job after SECONDS.
wait_for() {
	limit=$1 what=$2
	shift 2
	t0=$(uptime_s)
	n=0
	until "$@" >/dev/null 2>&1; do
		[ $(($(uptime_s) - t0)) -lt "$limit" ] || fail "$what: not after ${limit} s"
		sleep 5
		n=$((n + 1))
		# Every minute, where the pods are (OUT/progress.txt): a slow run
		# stopped by the harness still shows what it was waiting for.
		if [ $((n % 12)) = 0 ] && [ -f /etc/bramble/bramble.yaml ]; then
			{
				echo "== $(uptime_s) s: waiting for $what"
				kubectl get pods -A -o wide 2>&1
				# Why a pod is not Ready or was restarted (probes, kills).
				kubectl get events -A --field-selector type=Warning 2>&1 | tail -n 15
				# Who has the (emulated) CPU, and how many page faults
				# read from the disk (bramble's executable pages, once
				# pkg/memtrim paged them out, come back that way).
				top -b -n 1 -w 200 2>&1 | head -n 15
				grep -E '^(pgmajfault|pgpgin) ' /proc/vmstat
			} >>"$OUT/progress.txt"
		fi
	done
	say "$what after $(($(uptime_s) - t0)) s"
}

node_ready() {
	[ "$(kubectl get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

nodes_ready() { # nodes_ready N: at least N nodes, all Ready
	n=$(kubectl get nodes --no-headers 2>/dev/null | awk '$2 == "Ready" { r++ } END { print r + 0 }')
	[ "$n" -ge "$1" ]
}

resolves() { # resolves NAME: CoreDNS (through its service IP) answers NAME with a service address
	busybox nslookup "$1" "$DNS_IP" 2>&1 | sed -n '/^Name:/,$p' | grep -q 'Address.*10\.43\.'
}

parity_is() { # parity_is HOST INT WANT
	[ "$(curl -s -m 60 "http://$1/parity?int=$2")" = "$3" ]
}

# wait_not_blocking: /parity answers while a /wait (about 5 s) is in
# flight. Tries a few times: under emulation a first /parity can be slow on
# its own. Records the times, checks only the order.
wait_not_blocking() {
	i=0
	while [ $i -lt 5 ]; do
		i=$((i + 1))
		curl -s -m 120 -o "$STATE/wait.body" -w '%{http_code} %{time_total}' "http://$IP/wait" >"$STATE/wait.code" &
		wpid=$!
		sleep 1
		p=$(curl -s -m 60 -w ' %{time_total}' "http://$IP/parity?int=7")
		running=no
		kill -0 "$wpid" 2>/dev/null && running=yes
		wait "$wpid"
		say "wait-check try $i: /parity during /wait: '$p' (s), /wait still running when it answered: $running; /wait: $(cat "$STATE/wait.code") (code, s)"
		case "$(cat "$STATE/wait.code")" in
		200\ *) ;;
		*) fail "/wait answered $(cat "$STATE/wait.code")" ;;
		esac
		if [ "${p% *}" = odd ] && [ $running = yes ]; then
			return 0
		fi
	done
	fail "/parity never answered while a /wait was in flight"
}

# ------------------------------------------------------------------ main

[ -f /boot/firmware/bramble-test.env ] || fail "no /boot/firmware/bramble-test.env"
# shellcheck disable=SC1091 # written by the harness
. /boot/firmware/bramble-test.env
mkdir -p "$STATE"
boot=$(($(cat "$STATE/boots" 2>/dev/null || echo 0) + 1))
echo "$boot" >"$STATE/boots"
say "boot $boot of $NAME ($ROLE) after $(uptime_s) s: $(cat /proc/cmdline)"

hostname "$NAME"
echo "$NAME" >/etc/hostname
printf '127.0.0.1\tlocalhost\n%s\t%s\n' "$IP" "$NAME" >/etc/hosts
echo "nameserver $GATEWAY" >/etc/resolv.conf
# The NIC (virtio-net; the initramfs's udev names it, enp0s5 on this
# machine): the one interface besides lo.
nic=
i=0
while [ -z "$nic" ] && [ $i -lt 30 ]; do
	for d in /sys/class/net/*; do
		[ "${d##*/}" = lo ] || [ ! -e "$d" ] || nic=${d##*/}
	done
	[ -n "$nic" ] || sleep 1
	i=$((i + 1))
done
[ -n "$nic" ] || fail "no network interface"
ip link set "$nic" up
ip addr add "$IP/24" dev "$nic"
ip route add default via "$GATEWAY" dev "$nic"
# Flush the logs to the OUT disk now and then: the harness may stop the
# guest at any time.
(while :; do
	sleep 15
	sync
done) &

if [ "$ROLE" = server ]; then
	SERVICE=bramble
else
	SERVICE=bramble-agent
fi

if [ ! -f "$STATE/installed" ]; then
	grep -qw cgroup_disable=memory /proc/cmdline || fail "first boot without cgroup_disable=memory"
	grep -qw memory /sys/fs/cgroup/cgroup.controllers && fail "memory cgroup on despite cgroup_disable=memory"
	t0=$(uptime_s)
	if [ "$ROLE" = agent ]; then
		export BRAMBLE_URL="https://$SERVER_IP:6443"
	fi
	if ! (cd /mnt/job/artifacts &&
		BRAMBLE_TOKEN="$TOKEN" INSTALL_BRAMBLE_SKIP_DOWNLOAD=true INSTALL_BRAMBLE_FIX_CGROUPS=true \
			sh /mnt/job/install.sh "$ROLE") >"$OUT/install.log" 2>&1; then
		cat "$OUT/install.log"
		fail "install.sh failed"
	fi
	cat "$OUT/install.log"
	say "installed in $(($(uptime_s) - t0)) s"
	grep -qw cgroup_enable=memory /boot/firmware/cmdline.txt ||
		fail "install.sh did not add cgroup_enable=memory to /boot/firmware/cmdline.txt"
	touch "$STATE/installed"
	sync
	umount /boot/firmware /mnt/out
	say rebooting
	echo b >/proc/sysrq-trigger
	sleep 60
fi

grep -qw memory /sys/fs/cgroup/cgroup.controllers || fail "memory cgroup still off after the cmdline.txt fix"
say "memory cgroup on"
t0=$(uptime_s)
# As install.sh says to start bramble without an init system (the modules
# first, as its systemd unit and OpenRC script do).
sh -c "modprobe br_netfilter; modprobe overlay; set -a; . /etc/bramble/$SERVICE.env; set +a; exec /usr/local/bin/bramble $ROLE >$OUT/bramble.log 2>&1" &
say "started bramble $ROLE (pid $!)"

if [ "$ROLE" = server ]; then
	wait_for "$READY_TIMEOUT" "node $NAME Ready" node_ready "$NAME"
	wait_for "$CHECK_TIMEOUT" "CoreDNS resolves kubernetes.default" resolves kubernetes.default.svc.cluster.local
	wait_for "$CHECK_TIMEOUT" "CoreDNS resolves plumber-api.plumber" resolves plumber-api.plumber.svc.cluster.local
	wait_for "$CHECK_TIMEOUT" "odd through Traefik" parity_is "$IP" 15 odd
	parity_is "$IP" 4 even || fail "/parity?int=4 is not even"
	wait_not_blocking
	say "server-ok after $(($(uptime_s) - t0)) s"
	if [ "$NODES" -gt 1 ]; then
		wait_for "$JOIN_TIMEOUT" "$NODES nodes Ready" nodes_ready "$NODES"
		kubectl get nodes -o wide
	fi
else
	wait_for "$READY_TIMEOUT" "flannel's vxlan device" ip link show flannel.1
	wait_for "$CHECK_TIMEOUT" "CoreDNS (on the server) resolves from the agent" resolves kubernetes.default.svc.cluster.local
	wait_for "$CHECK_TIMEOUT" "odd through Traefik from the agent" parity_is "$SERVER_IP" 15 odd
	say "agent-ok after $(($(uptime_s) - t0)) s"
fi
diagnostics
sync
say finished
while :; do sleep 3600; done
