#!/bin/sh
# bramble-killall.sh: stop everything a bramble node runs and remove what it
# leaves behind in this network and mount namespace:
#   - the bramble server or agent of the data dir (found by its command line),
#     containerd, and the containerd-shim-runc-v2 shims whose command line
#     mentions the data dir or the run dir, with all their container processes;
#   - mounts under the data dir, the run dir, <kubelet-dir>/pods and
#     /run/netns/cni-* (deepest first, lazily when busy);
#   - the cni0, flannel.1 and flannel-wg interfaces and the pod network
#     namespaces (cni-*);
#   - iptables/ip6tables chains and rules named KUBE-*, FLANNEL-*, CNI-* in
#     every table, for the legacy and the nft backend; the nftables
#     kube-proxy tables; the network-policy ipsets (KUBE-SRC-*, KUBE-DST-*,
#     kube-router-local-pods, and their inet6: versions);
#   - the run dir itself. The data dir (images, certificates, datastore) is kept.
#
# Usage: bramble-killall.sh [--data-dir DIR] [--run-dir DIR] [--kubelet-dir DIR] [-q] [--check]
#   --check only validates the arguments and exits.
#
# Environment: BRAMBLE_DATA_DIR (default /var/lib/bramble), BRAMBLE_RUN_DIR
# (default /run/bramble), BRAMBLE_KUBELET_DIR (default /var/lib/kubelet).
# Safe to run twice, and when nothing is running. Needs root.
set -u

DATA_DIR="${BRAMBLE_DATA_DIR:-/var/lib/bramble}"
RUN_DIR="${BRAMBLE_RUN_DIR:-/run/bramble}"
KUBELET_DIR="${BRAMBLE_KUBELET_DIR:-/var/lib/kubelet}"
QUIET=0
CHECK=0
# What the rules and chains bramble's components create are called.
CHAIN_RE='(KUBE|FLANNEL|CNI)-'

log() { [ "$QUIET" = 1 ] || printf 'killall: %s\n' "$*" >&2; }
warn() { printf 'killall: warning: %s\n' "$*" >&2; }
die() {
	printf 'killall: error: %s\n' "$*" >&2
	exit 1
}
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
	case "$1" in
	--data-dir) [ $# -ge 2 ] || die "$1 needs a value"; DATA_DIR="$2"; shift 2 ;;
	--data-dir=*) DATA_DIR="${1#*=}"; shift ;;
	--run-dir) [ $# -ge 2 ] || die "$1 needs a value"; RUN_DIR="$2"; shift 2 ;;
	--run-dir=*) RUN_DIR="${1#*=}"; shift ;;
	--kubelet-dir) [ $# -ge 2 ] || die "$1 needs a value"; KUBELET_DIR="$2"; shift 2 ;;
	--kubelet-dir=*) KUBELET_DIR="${1#*=}"; shift ;;
	-q | --quiet) QUIET=1; shift ;;
	--check) CHECK=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

[ "$(id -u)" = 0 ] || die "must run as root"

# system_dir DIR: DIR is the root, a top-level directory, a user's home or
# a directory the system keeps its own things in (anything under /usr,
# /etc, /boot; /var/lib, /var/log, ...): never a node's own directory.
system_dir() {
	case "$1" in
	/ | /usr/* | /etc/* | /boot/* | /proc/* | /sys/* | /dev/*) return 0 ;;
	/var/lib | /var/log | /var/cache | /var/tmp | /var/spool | /var/mail | /var/backups | /var/opt | /var/local | /var/run) return 0 ;;
	/home/*/*) return 1 ;;
	/home/*) return 0 ;;
	/*/*) return 1 ;;
	esac
	return 0 # a top-level directory: /var, /home, /srv, /root, ...
}

# clean_dir DIR: DIR without trailing or doubled slashes; refuses relative
# paths, . and .. in them, and system directories (system_dir), also behind
# a symbolic link: the unmount and remove steps must never touch those.
clean_dir() {
	d="$(printf '%s' "$1" | tr -s /)"
	while [ "${#d}" -gt 1 ] && [ "${d%/}" != "$d" ]; do d="${d%/}"; done
	case "$d" in
	/*) ;;
	*) die "'$1' is not an absolute path" ;;
	esac
	case "$d/" in
	*/./* | */../*) die "'$1': give the path without . or .." ;;
	esac
	system_dir "$d" && die "refusing to clean up '$1': a system directory"
	if [ -e "$d" ] && real="$(readlink -f "$d")" && system_dir "$real"; then
		die "refusing to clean up '$1': it is $real, a system directory"
	fi
	printf '%s\n' "$d"
}
DATA_DIR="$(clean_dir "$DATA_DIR")" || exit 1
RUN_DIR="$(clean_dir "$RUN_DIR")" || exit 1
KUBELET_DIR="$(clean_dir "$KUBELET_DIR")" || exit 1
[ "$CHECK" = 1 ] && exit 0

# ------------------------------------------------------------ processes

# ps_list: "PID ARGS..." for every process but this script; NULs in the
# command line become spaces, and a space ends each line.
ps_list() {
	for d in /proc/[0-9]*; do
		p="${d#/proc/}"
		[ "$p" = "$$" ] && continue
		c="$(tr '\0' ' ' 2>/dev/null <"$d/cmdline")" || continue
		[ -n "$c" ] && printf '%s %s \n' "$p" "$c"
	done
}

# mentions TEXT DIR: whether TEXT names DIR or a path below it.
mentions() {
	case "$1 " in
	*"$2/"* | *"$2 "*) return 0 ;;
	esac
	return 1
}

# alive PID: the process exists and is not a zombie.
alive() {
	[ -r "/proc/$1/stat" ] || return 1
	s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	s="${s##*) }"
	[ "${s%% *}" != Z ] && [ -n "$s" ]
}

# proc_table: "pid ppid" for every process.
proc_table() {
	for f in /proc/[0-9]*/stat; do
		s="$(cat "$f" 2>/dev/null)" || continue
		p="${f#/proc/}"
		p="${p%/stat}"
		s="${s##*) }"
		# shellcheck disable=SC2086 # split the stat fields on purpose
		set -- $s
		[ $# -ge 2 ] && printf '%s %s\n' "$p" "$2"
	done
}

# tree PID...: the PIDs and all their descendants, one a line.
tree() {
	proc_table | awk -v roots="$*" '
		BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
		{ parent[$1] = $2 }
		END {
			do {
				grew = 0
				for (p in parent)
					if (!(p in want) && (parent[p] in want)) { want[p] = 1; grew = 1 }
			} while (grew)
			for (p in want) print p
		}'
}

# wait_gone SECONDS PID...: wait until none of the PIDs is alive; returns 1
# on timeout.
wait_gone() {
	t="$1"
	shift
	while :; do
		left=""
		for p in "$@"; do alive "$p" && left="$left $p"; done
		[ -z "$left" ] && return 0
		[ "$t" -le 0 ] && return 1
		sleep 1
		t=$((t - 1))
	done
}

# stop NAME SECONDS PID...: SIGTERM, wait, then SIGKILL what is left.
stop() {
	name="$1"
	secs="$2"
	shift 2
	[ $# -gt 0 ] || return 0
	log "stopping $name: $*"
	kill -TERM "$@" 2>/dev/null
	if ! wait_gone "$secs" "$@"; then
		log "killing $name: $*"
		kill -KILL "$@" 2>/dev/null
		wait_gone 5 "$@" || warn "$name did not exit: $*"
	fi
}

# for_data_dir PID ARGS: whether a bramble process runs for DATA_DIR: its
# arguments or its BRAMBLE_DATA_DIR name it, or it names none and DATA_DIR
# is the default.
for_data_dir() {
	mentions "$2" "$DATA_DIR" && return 0
	env_dir="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | sed -n 's/^BRAMBLE_DATA_DIR=//p' | tail -n 1)"
	if [ -n "$env_dir" ]; then
		[ "$(clean_dir "$env_dir" 2>/dev/null)" = "$DATA_DIR" ]
		return
	fi
	case "$2" in
	*" --data-dir"* | *" -d "* | *" -d="*) return 1 ;;
	esac
	[ "$DATA_DIR" = /var/lib/bramble ]
}

# bramble_pids: every bramble server or agent for DATA_DIR.
bramble_pids() {
	ps_list | while read -r p a rest; do
		[ "${a##*/}" = bramble ] || continue
		case " $rest" in
		" containerd "*) continue ;; # bramble's containerd child: stopped below
		esac
		for_data_dir "$p" "$a $rest" && printf '%s\n' "$p"
	done
}

# node_pids KIND: the containerd (KIND containerd) or shim (KIND shim)
# processes whose command line mentions the data dir or the run dir.
node_pids() {
	ps_list | while read -r p a rest; do
		case "$1:${a##*/}" in
		shim:containerd-shim*) ;;
		containerd:containerd) ;;
		containerd:bramble) case " $rest" in " containerd "*) ;; *) continue ;; esac ;;
		*) continue ;;
		esac
		if mentions "$a $rest" "$DATA_DIR" || mentions "$a $rest" "$RUN_DIR"; then
			printf '%s\n' "$p"
		fi
	done
}

kill_processes() {
	# shellcheck disable=SC2046 # one PID a word
	stop bramble 15 $(bramble_pids)
	# The shims (and so the containers) outlive containerd: collect them first.
	shims="$(node_pids shim)"
	# shellcheck disable=SC2046
	stop containerd 10 $(node_pids containerd)
	# Kill the shims with their containers; repeat while processes fork.
	[ -n "$shims" ] || return 0
	rounds=0
	while :; do
		# shellcheck disable=SC2086
		victims="$(for p in $(tree $shims); do alive "$p" && printf '%s\n' "$p"; done)"
		[ -n "$victims" ] || break
		rounds=$((rounds + 1))
		[ "$rounds" -gt 5 ] && {
			warn "processes survive SIGKILL: $(printf '%s\n' "$victims" | paste -sd ' ' -)"
			break
		}
		log "killing shims and their containers: $(printf '%s\n' "$victims" | paste -sd ' ' -)"
		# shellcheck disable=SC2086
		kill -KILL $victims 2>/dev/null
		# shellcheck disable=SC2086
		wait_gone 5 $victims || :
	done
}

# ------------------------------------------------------------ mounts

# mounts_under DIR...: mount points at or below the DIRs (or matching the
# glob patterns), deepest first.
mounts_under() {
	awk '{ print $5 }' /proc/self/mountinfo | sed 's/\\040/ /g; s/\\011/	/g' |
		while IFS= read -r mp; do
			for d in "$@"; do
				# shellcheck disable=SC2254 # patterns on purpose
				case "$mp" in
				"$d" | "$d"/*) printf '%s\n' "$mp"; break ;;
				$d) printf '%s\n' "$mp"; break ;;
				esac
			done
		done | awk -F/ '{ print NF, $0 }' | sort -rn -k1,1 | cut -d' ' -f2-
}

unmount_all() {
	mounts_under "$DATA_DIR" "$RUN_DIR" "$KUBELET_DIR/pods" '/run/netns/cni-*' |
		while IFS= read -r mp; do
			log "unmounting $mp"
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || warn "cannot unmount $mp"
		done
}

# ------------------------------------------------------------ network

delete_links() {
	command -v ip >/dev/null 2>&1 || return 0
	for l in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6; do
		if ip link show "$l" >/dev/null 2>&1; then
			log "deleting interface $l"
			ip link delete "$l" || warn "cannot delete interface $l"
		fi
	done
}

delete_pod_netns() {
	if command -v ip >/dev/null 2>&1; then
		for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
			log "deleting network namespace $ns"
			ip netns delete "$ns" 2>/dev/null || warn "cannot delete network namespace $ns"
		done
	fi
	for f in /run/netns/cni-*; do
		[ -e "$f" ] || continue
		umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null
		rm -f "$f"
	done
}

# clean_iptables SAVE RESTORE: drop the chains and rules bramble's
# components make, keeping everything else.
clean_iptables() {
	command -v "$1" >/dev/null 2>&1 || return 0
	command -v "$2" >/dev/null 2>&1 || return 0
	dump="$("$1" 2>/dev/null)" || return 0
	printf '%s\n' "$dump" | grep -Eq "^:$CHAIN_RE|^-A $CHAIN_RE| -[jg] $CHAIN_RE" || return 0
	log "removing KUBE-*, FLANNEL-*, CNI-* rules and chains ($1)"
	printf '%s\n' "$dump" | grep -Ev "^:$CHAIN_RE|^-A $CHAIN_RE| -[jg] $CHAIN_RE" | "$2" ||
		warn "$2 failed"
}

clean_firewall() {
	for fam in iptables ip6tables; do
		found=0
		for backend in legacy nft; do
			if command -v "$fam-$backend-save" >/dev/null 2>&1; then
				found=1
				clean_iptables "$fam-$backend-save" "$fam-$backend-restore"
			fi
		done
		[ "$found" = 1 ] || clean_iptables "$fam-save" "$fam-restore"
	done
	if command -v nft >/dev/null 2>&1; then
		for fam in ip ip6 inet; do
			if nft list table "$fam" kube-proxy >/dev/null 2>&1; then
				log "deleting nftables table $fam kube-proxy"
				nft delete table "$fam" kube-proxy || warn "cannot delete nftables table $fam kube-proxy"
			fi
		done
	fi
}

# clean_ipsets: destroy the network-policy controller's ipsets (after the
# iptables rules that use them are gone).
clean_ipsets() {
	command -v ipset >/dev/null 2>&1 || return 0
	for set in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?(KUBE-(SRC|DST)-|kube-router-local-pods$)'); do
		log "destroying ipset $set"
		ipset destroy "$set" 2>/dev/null || warn "cannot destroy ipset $set"
	done
}

# ------------------------------------------------------------ main

kill_processes
unmount_all
delete_pod_netns
delete_links
clean_firewall
clean_ipsets
if [ -d "$RUN_DIR" ]; then
	if [ -n "$(mounts_under "$RUN_DIR")" ]; then
		warn "not removing $RUN_DIR: something is still mounted below it"
	else
		log "removing $RUN_DIR"
		rm -rf "$RUN_DIR" || warn "cannot remove $RUN_DIR"
	fi
fi
exit 0
