#!/bin/sh
# install.sh: installs bramble, a small Kubernetes for Raspberry Pi clusters.
#
#   curl -sfL https://get.bramble.dev | sh -                          # first node (server)
#   curl -sfL https://get.bramble.dev | BRAMBLE_URL=https://pi1:6443 \
#       BRAMBLE_TOKEN=<token from pi1> sh -                            # more nodes (agents)
#   INSTALL_BRAMBLE_SKIP_DOWNLOAD=true ./install.sh                   # air-gapped
#
# Arguments after `sh -s -` are passed to bramble: `sh -s - server --disable traefik`.
# A first argument `server` or `agent` picks the command; else BRAMBLE_URL set
# means agent, unset means server. Secrets never go on bramble's command line
# or into the service file (mode 0644, and `ps` shows command lines to every
# user): --token/-t, --agent-token and --datastore-endpoint given as
# arguments are written to the environment file (mode 0600) instead, as
# BRAMBLE_TOKEN, BRAMBLE_AGENT_TOKEN and BRAMBLE_DATASTORE_ENDPOINT; so is
# --data-dir/-d (BRAMBLE_DATA_DIR), which install.sh and the uninstall script
# must know. A data dir that is a system directory (/, /var, /usr, /etc,
# /home, /root, /boot, /var/lib, a home directory, ...) is refused.
#
# The host needs the iptables and ipset commands (NetworkPolicies are
# enforced with them, a node refuses to start without them unless the server
# runs with --disable-network-policy; Raspberry Pi OS Lite lacks ipset): an
# online install with apt-get installs the Debian packages iptables and
# ipset when their commands are missing (INSTALL_BRAMBLE_SKIP_PACKAGES=true:
# never); an air-gapped one installs nothing. Either way install.sh shows
# `bramble check-config`'s report of anything missing, with the fix.
#
# What it does: detects the architecture (amd64, arm64, armhf) and the init
# system; downloads sha256sum-<arch>.txt, bramble-<arch> and the image tarball
# bramble-airgap-images-<arch>.tar.zst (the images of CoreDNS, Traefik and the
# Plumber API, which are on no registry) from INSTALL_BRAMBLE_DOWNLOAD_URL into
# a temporary directory and checks every sha256 there (nothing is installed on
# a mismatch); the tarball is not downloaded again when the one installed
# already has the listed sha256. It installs <data-dir>/agent/images/<tarball>
# (<data-dir> is BRAMBLE_DATA_DIR, default /var/lib/bramble; bramble imports it
# at start), <bin-dir>/bramble, the kubectl, crictl and ctr symlinks
# (unless such a command exists already and is not bramble),
# bramble-killall.sh and bramble-uninstall.sh; writes an environment file
# (mode 0600) with every BRAMBLE_* variable set; writes a systemd unit
# (Type=notify) or an OpenRC script, enables and starts it. Without an init
# system it prints how to start bramble.
#
# Environment:
#   BRAMBLE_*                        written to the environment file bramble reads
#                                    (BRAMBLE_URL, BRAMBLE_TOKEN, BRAMBLE_DATA_DIR, ...)
#   BRAMBLE_URL                      server to join: installs an agent (BRAMBLE_TOKEN is then required);
#                                    with `server`, a further server of that cluster (the server token
#                                    and BRAMBLE_DATASTORE_ENDPOINT, the database the servers share)
#   INSTALL_BRAMBLE_DOWNLOAD_URL     where bramble-<arch>, bramble-airgap-images-<arch>.tar.zst and
#                                    sha256sum-<arch>.txt (listing both) are (default: the latest
#                                    GitHub release,
#                                    https://github.com/bramble-pi/bramble/releases/latest/download);
#                                    https:// only (curl also refuses a redirect to http://), or a
#                                    local directory (/path or file:///path, checked the same way)
#   INSTALL_BRAMBLE_SKIP_IMAGES      true: no image tarball (the bundled workloads then have no
#                                    images unless you put them in <data-dir>/agent/images/)
#   INSTALL_BRAMBLE_SKIP_DOWNLOAD    true: air-gapped install from INSTALL_BRAMBLE_ARTIFACT_DIR
#                                    (default: the current directory): bramble-<arch> (or bramble),
#                                    optionally sha256sum-<arch>.txt (what it lists is checked) and
#                                    bramble-airgap-images-<arch>.tar.zst, copied into
#                                    <data-dir>/agent/images/
#   TMPDIR                           where the downloads are checked before they are installed
#                                    (default /tmp; it needs room for the image tarball, 100+ MB)
#   INSTALL_BRAMBLE_EXEC             extra arguments for bramble (`--node-name pi2 --debug`)
#   INSTALL_BRAMBLE_BIN_DIR          where bramble and the symlinks go (default /usr/local/bin)
#   INSTALL_BRAMBLE_SYMLINK          force: replace kubectl/crictl/ctr even when they are not
#                                    ours; skip: make none (default: only where no such command is)
#   INSTALL_BRAMBLE_SKIP_PACKAGES    true: do not apt-get install iptables and ipset when missing
#                                    (https downloads only; installs from a directory never do)
#   INSTALL_BRAMBLE_SKIP_ENABLE      true: write the service but neither enable nor start it
#   INSTALL_BRAMBLE_SKIP_START       true: enable the service but do not start it
#   INSTALL_BRAMBLE_FIX_CGROUPS      true: on a Raspberry Pi whose kernel command line switches
#                                    the memory cgroup off, add cgroup_memory=1 cgroup_enable=memory
#                                    to cmdline.txt (backup kept; reboot needed)
#   INSTALL_BRAMBLE_ARCH             amd64, arm64 or armhf instead of the detected one
#   INSTALL_BRAMBLE_SYSTEMD_DIR      where the unit goes (default /etc/systemd/system)
set -e

# ---------------------------------------------------------------- helpers

info() { printf '[INFO]  %s\n' "$*"; }
warn() { printf '[WARN]  %s\n' "$*" >&2; }
fatal() {
	printf '[ERROR] %s\n' "$*" >&2
	exit 1
}

is_true() {
	case "$1" in
	true | TRUE | True | 1 | yes) return 0 ;;
	esac
	return 1
}

# quote WORD [WHAT]: WORD in single quotes, read the same by sh, by systemd
# and inside the double quotes of an OpenRC command_args. Quotes, $, `, \
# and newlines are refused (no value bramble takes needs them); the error
# names WHAT, never the value (it may be a secret).
quote() {
	case "$1" in
	*"'"* | *'"'* | *'$'* | *'`'* | *"\\"* | *'
'*) fatal "${2:-a value} contains a quote, \$, \`, a backslash or a newline, which the service files cannot hold" ;;
	esac
	printf "'%s'" "$1"
}

# to_env FLAG VALUE: a bramble flag given as an argument that goes to the
# environment file instead (a secret, or the data dir) as its BRAMBLE_*
# variable; the flag wins over a variable set as well, as in bramble.
to_env() {
	case "${1#-}" in
	-token | token | t) name=BRAMBLE_TOKEN ;;
	-agent-token | agent-token) name=BRAMBLE_AGENT_TOKEN ;;
	-datastore-endpoint | datastore-endpoint) name=BRAMBLE_DATASTORE_ENDPOINT ;;
	-data-dir | data-dir | d) name=BRAMBLE_DATA_DIR ;;
	*) fatal "to_env: unexpected flag $1" ;;
	esac
	eval "$name=\$2"
	export "${name?}"
	info "$1: written to the environment file as $name, not to the command line"
}

# ---------------------------------------------------------------- set-up

setup_env() {
	SUDO=""
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || fatal "run as root (no sudo found): curl -sfL ... | sudo sh -"
		SUDO=sudo
	fi

	# The command: the first argument, else INSTALL_BRAMBLE_EXEC's first
	# word, else agent when BRAMBLE_URL is set.
	set -f
	# shellcheck disable=SC2086 # INSTALL_BRAMBLE_EXEC is split into words on purpose
	set -- $INSTALL_BRAMBLE_EXEC "$@"
	set +f
	case "${1:-}" in
	server | agent)
		CMD="$1"
		shift
		;;
	*)
		if [ -n "${BRAMBLE_URL:-}" ]; then CMD=agent; else CMD=server; fi
		;;
	esac
	EXEC_ARGS=""
	while [ $# -gt 0 ]; do
		a="$1"
		shift
		# Secrets (and the data dir) go to the environment file.
		case "$a" in
		--token | -token | -t | --agent-token | -agent-token | --datastore-endpoint | -datastore-endpoint | --data-dir | -data-dir | -d)
			[ $# -gt 0 ] || fatal "$a needs a value"
			to_env "$a" "$1"
			shift
			continue
			;;
		--token=* | -token=* | -t=* | --agent-token=* | -agent-token=* | --datastore-endpoint=* | -datastore-endpoint=* | --data-dir=* | -data-dir=* | -d=*)
			to_env "${a%%=*}" "${a#*=}"
			continue
			;;
		esac
		quote "$a" "an argument for bramble" >/dev/null # dies on a value the service files cannot hold
		EXEC_ARGS="$EXEC_ARGS $(quote "$a")"
	done

	BIN_DIR="${INSTALL_BRAMBLE_BIN_DIR:-/usr/local/bin}"
	SYSTEMD_DIR="${INSTALL_BRAMBLE_SYSTEMD_DIR:-/etc/systemd/system}"
	DOWNLOAD_URL="${INSTALL_BRAMBLE_DOWNLOAD_URL:-https://github.com/bramble-pi/bramble/releases/latest/download}"
	DOWNLOAD_URL="${DOWNLOAD_URL%/}"
	if ! is_true "${INSTALL_BRAMBLE_SKIP_DOWNLOAD:-}"; then
		case "$DOWNLOAD_URL" in
		https://* | file:///*) ;;
		/*) DOWNLOAD_URL="file://$DOWNLOAD_URL" ;;
		http://*) fatal "INSTALL_BRAMBLE_DOWNLOAD_URL is http://, refused: over plain HTTP anyone on the way can change bramble and its checksums. Use https://, or a local directory (/path) with the files" ;;
		*) fatal "INSTALL_BRAMBLE_DOWNLOAD_URL must be an https:// URL or a local directory, got '$DOWNLOAD_URL'" ;;
		esac
	fi
	ARTIFACT_DIR="${INSTALL_BRAMBLE_ARTIFACT_DIR:-.}"
	DATA_DIR="${BRAMBLE_DATA_DIR:-/var/lib/bramble}"
	case "$DATA_DIR" in
	/*) ;;
	*) fatal "BRAMBLE_DATA_DIR must be an absolute path, got '$DATA_DIR'" ;;
	esac
	IMAGES_DIR="$DATA_DIR/agent/images"
	case "$BIN_DIR" in
	/*) ;;
	*) fatal "INSTALL_BRAMBLE_BIN_DIR must be an absolute path, got '$BIN_DIR'" ;;
	esac

	# The BRAMBLE_* variables go to the environment file: check them now,
	# before anything is installed. check-config's test hook stays out.
	BRAMBLE_VARS="$(env | sed -n 's/^\(BRAMBLE_[A-Z0-9_]*\)=.*/\1/p' | grep -vx BRAMBLE_HOST_ROOT | sort -u)" || :
	for name in $BRAMBLE_VARS; do
		eval "value=\${$name}"
		# shellcheck disable=SC2154 # value is set by the eval
		quote "$value" "$name" >/dev/null
	done
	quote "$BIN_DIR" INSTALL_BRAMBLE_BIN_DIR >/dev/null
	quote "$DATA_DIR" BRAMBLE_DATA_DIR >/dev/null

	if [ "$CMD" = agent ]; then
		[ -n "${BRAMBLE_URL:-}" ] || fatal "an agent needs BRAMBLE_URL, the server to join (https://<server>:6443)"
		case "$BRAMBLE_URL" in
		https://*) ;;
		*) fatal "BRAMBLE_URL must start with https:// (e.g. https://pi1:6443), got '$BRAMBLE_URL'" ;;
		esac
		[ -n "${BRAMBLE_TOKEN:-}" ] || fatal "BRAMBLE_URL is set, so this installs an agent, which needs BRAMBLE_TOKEN: on the server run 'sudo cat ${DATA_DIR}/server/token'"
		SERVICE=bramble-agent
	else
		SERVICE=bramble
	fi
}

setup_arch() {
	[ "$(uname -s)" = Linux ] || fatal "bramble runs on Linux only, this is $(uname -s)"
	if [ -n "${INSTALL_BRAMBLE_ARCH:-}" ]; then
		ARCH="$INSTALL_BRAMBLE_ARCH"
	elif command -v dpkg >/dev/null 2>&1; then
		# dpkg knows the userland: a 32-bit Raspberry Pi OS on a 64-bit
		# kernel says aarch64 in uname but needs the armhf binary.
		ARCH="$(dpkg --print-architecture)"
	else
		ARCH="$(uname -m)"
	fi
	case "$ARCH" in
	amd64 | x86_64) ARCH=amd64 ;;
	arm64 | aarch64) ARCH=arm64 ;;
	armhf | armv7l | armv7 | arm) ARCH=armhf ;;
	armv6l | armel) fatal "ARMv6 (Raspberry Pi 1 and Zero) is not supported: bramble needs ARMv7 or newer" ;;
	*) fatal "unsupported architecture '$ARCH' (bramble is built for amd64, arm64 and armhf)" ;;
	esac
	IMAGES_NAME="bramble-airgap-images-$ARCH.tar.zst"

	OS="unknown Linux"
	if [ -r /etc/os-release ]; then
		OS="$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')"
	fi
	MODEL=""
	if [ -r /proc/device-tree/model ]; then
		MODEL="$(tr -d '\000' </proc/device-tree/model)"
	fi
	info "installing bramble $CMD for $ARCH on ${OS}${MODEL:+ ($MODEL)}"
}

setup_init() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		INIT=systemd
		SERVICE_FILE="$SYSTEMD_DIR/$SERVICE.service"
		ENV_FILE="$SYSTEMD_DIR/$SERVICE.service.env"
	elif [ -x /sbin/openrc-run ] && command -v rc-update >/dev/null 2>&1; then
		INIT=openrc
		SERVICE_FILE="/etc/init.d/$SERVICE"
		ENV_FILE="/etc/bramble/$SERVICE.env"
	else
		INIT=none
		SERVICE_FILE=""
		ENV_FILE="/etc/bramble/$SERVICE.env"
	fi
}

# ---------------------------------------------------------------- download

setup_tmp() {
	TMP_DIR="$(mktemp -d -t bramble-install.XXXXXXXX)"
	DL_PID=""
	cleanup() {
		code=$?
		set +e
		trap - EXIT
		[ -n "$DL_PID" ] && kill "$DL_PID" 2>/dev/null
		rm -rf "$TMP_DIR"
		exit "$code"
	}
	trap cleanup INT HUP TERM EXIT
}

# fetch FILE URL [bar|background]: one quiet download; bar: with curl's or
# GNU wget's progress bar; background: run as `fetch ... background &`, the
# downloader replaces the subshell (so that its PID is the downloader's).
fetch() {
	run=""
	[ "${3:-}" = background ] && run="exec"
	case "$2" in
	file://*)
		$run cp "${2#file://}" "$1"
		return
		;;
	esac
	command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 ||
		fatal "neither curl nor wget is installed: install one (apt-get install curl), or copy the files over and use INSTALL_BRAMBLE_SKIP_DOWNLOAD=true"
	if command -v curl >/dev/null 2>&1; then
		# https only, redirects included.
		if [ "${3:-}" = bar ]; then
			curl -fL --proto =https --proto-redir =https --progress-bar -o "$1" "$2"
		else
			$run curl -fsSL --proto =https --proto-redir =https -o "$1" "$2"
		fi
	elif [ "${3:-}" = bar ]; then
		wget -q --show-progress --progress=bar:force -O "$1" "$2"
	else
		$run wget -q -O "$1" "$2"
	fi
}

# megabytes FILE: its size in MB, one decimal (0.0 while it does not exist).
megabytes() {
	if [ -f "$1" ]; then
		wc -c <"$1" | awk '{ printf "%.1f", $1 / 1048576 }'
	else
		printf 0.0
	fi
}

# download FILE URL [progress]: with progress, a big file shows how far it
# got: a progress bar on a terminal, else a line every 5 seconds.
download() {
	if [ "${3:-}" != progress ]; then
		fetch "$1" "$2" || fatal "download of $2 failed"
		return
	fi
	started="$(date +%s)"
	if [ -t 2 ] && { command -v curl >/dev/null 2>&1 || wget --version 2>/dev/null | grep -q 'GNU Wget'; }; then
		fetch "$1" "$2" bar || fatal "download of $2 failed"
	else
		# In the background, so that this shell can report on it.
		fetch "$1" "$2" background &
		DL_PID=$!
		n=0
		while kill -0 "$DL_PID" 2>/dev/null; do
			sleep 1
			n=$((n + 1))
			if [ $((n % 5)) = 0 ] && kill -0 "$DL_PID" 2>/dev/null; then
				info "$(basename "$1"): $(megabytes "$1") MB so far"
			fi
		done
		if ! wait "$DL_PID"; then
			DL_PID=""
			fatal "download of $2 failed"
		fi
		DL_PID=""
	fi
	info "downloaded $(basename "$2"), $(megabytes "$1") MB in $(($(date +%s) - started)) s"
}

# sha256_of FILE [sudo]: its sha256 (read through sudo when the second
# argument says so).
sha256_of() {
	as="${2:-}"
	if command -v sha256sum >/dev/null 2>&1; then
		$as sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		$as shasum -a 256 "$1" | cut -d' ' -f1
	else
		fatal "no sha256sum to verify the download with"
	fi
}

# listed SUMS NAME: the sha256 SUMS lists for NAME (empty when none).
listed() {
	awk -v n="$2" '$2 == n || $2 == "*" n { print $1; exit }' "$1"
}

# verify FILE SUMS NAME: FILE's sha256 is the one SUMS lists for NAME.
verify() {
	want="$(listed "$2" "$3")"
	[ -n "$want" ] || fatal "$(basename "$2") has no checksum for $3; nothing was installed"
	got="$(sha256_of "$1")"
	[ "$got" = "$want" ] || fatal "sha256 mismatch for $3: expected $want, got $got; nothing was installed"
	info "sha256 of $3 verified"
}

get_sums() {
	SUMS=""
	if is_true "${INSTALL_BRAMBLE_SKIP_DOWNLOAD:-}"; then
		[ -f "$ARTIFACT_DIR/sha256sum-$ARCH.txt" ] && SUMS="$ARTIFACT_DIR/sha256sum-$ARCH.txt"
		return 0
	fi
	SUMS="$TMP_DIR/sha256sum.txt"
	info "downloading $DOWNLOAD_URL/sha256sum-$ARCH.txt"
	download "$SUMS" "$DOWNLOAD_URL/sha256sum-$ARCH.txt"
	# Both downloads must be checkable: say so before either starts.
	[ -n "$(listed "$SUMS" "bramble-$ARCH")" ] ||
		fatal "sha256sum-$ARCH.txt at $DOWNLOAD_URL lists no bramble-$ARCH; nothing was installed"
	if ! is_true "${INSTALL_BRAMBLE_SKIP_IMAGES:-}" && [ -z "$(listed "$SUMS" "$IMAGES_NAME")" ]; then
		fatal "sha256sum-$ARCH.txt at $DOWNLOAD_URL lists no $IMAGES_NAME (a release made without the image tarball?); nothing was installed (INSTALL_BRAMBLE_SKIP_IMAGES=true installs bramble without it)"
	fi
}

get_binary() {
	BINARY="$TMP_DIR/bramble"
	NAME="bramble-$ARCH"
	if is_true "${INSTALL_BRAMBLE_SKIP_DOWNLOAD:-}"; then
		src=""
		for f in "$ARTIFACT_DIR/$NAME" "$ARTIFACT_DIR/bramble"; do
			if [ -f "$f" ]; then
				src="$f"
				break
			fi
		done
		if [ -z "$src" ] && [ -x "$BIN_DIR/bramble" ]; then
			info "air-gapped: using the bramble already in $BIN_DIR"
			src="$BIN_DIR/bramble"
		fi
		[ -n "$src" ] || fatal "air-gapped install: no $NAME or bramble in $(cd "$ARTIFACT_DIR" && pwd) (copy them there, or set INSTALL_BRAMBLE_ARTIFACT_DIR)"
		cp "$src" "$BINARY"
		if [ -n "$SUMS" ] && [ "$src" = "$ARTIFACT_DIR/$NAME" ]; then
			verify "$BINARY" "$SUMS" "$NAME"
		fi
	else
		info "downloading $DOWNLOAD_URL/$NAME"
		download "$BINARY" "$DOWNLOAD_URL/$NAME" progress
		verify "$BINARY" "$SUMS" "$NAME"
	fi
	chmod 755 "$BINARY"
	VERSION="$("$BINARY" --version 2>/dev/null)" ||
		fatal "$NAME does not run on this machine (wrong architecture or a broken file); nothing was installed"
	info "got $VERSION"
}

# check_data_dir refuses a data dir that is a system directory (/, /var,
# /usr, /etc, /home, ...): bramble-uninstall.sh deletes the data dir. The
# killall script of the binary being installed is the one judge of that
# (bramble-killall.sh --check), for install.sh and the uninstall script.
check_data_dir() {
	"$BINARY" killall-script >"$TMP_DIR/killall.sh" || fatal "$NAME killall-script failed; nothing was installed"
	$SUDO sh "$TMP_DIR/killall.sh" --check --data-dir "$DATA_DIR" ||
		fatal "BRAMBLE_DATA_DIR (or --data-dir) '$DATA_DIR' cannot be bramble's data dir: bramble-uninstall.sh would delete it; nothing was installed"
}

# get_images sets IMAGES to the verified image tarball to install, or to
# nothing when there is none or the installed one is the same.
get_images() {
	IMAGES=""
	if is_true "${INSTALL_BRAMBLE_SKIP_IMAGES:-}"; then
		info "no image tarball (INSTALL_BRAMBLE_SKIP_IMAGES): the bundled workloads (CoreDNS, Traefik, the Plumber API) need its images in $IMAGES_DIR/"
		return 0
	fi
	want=""
	if is_true "${INSTALL_BRAMBLE_SKIP_DOWNLOAD:-}"; then
		for f in "$ARTIFACT_DIR/$IMAGES_NAME" "$ARTIFACT_DIR/${IMAGES_NAME%.zst}"; do
			if [ -f "$f" ]; then
				IMAGES="$f"
				break
			fi
		done
		if [ -z "$IMAGES" ]; then
			warn "no $IMAGES_NAME in $(cd "$ARTIFACT_DIR" && pwd): without it the bundled workloads (CoreDNS, Traefik, the Plumber API) have no images"
			return 0
		fi
		if [ -n "$SUMS" ]; then
			want="$(listed "$SUMS" "$(basename "$IMAGES")")"
			[ -z "$want" ] || verify "$IMAGES" "$SUMS" "$(basename "$IMAGES")"
		fi
	else
		want="$(listed "$SUMS" "$IMAGES_NAME")"
	fi
	name="$(basename "${IMAGES:-$IMAGES_NAME}")"
	# An upgrade with the same images: keep the installed tarball (bramble
	# then skips the import too).
	if [ -n "$want" ] && $SUDO test -f "$IMAGES_DIR/$name" && [ "$(sha256_of "$IMAGES_DIR/$name" "$SUDO")" = "$want" ]; then
		info "$IMAGES_DIR/$name unchanged (sha256 $want)"
		IMAGES=""
		return 0
	fi
	if [ -z "$IMAGES" ]; then
		IMAGES="$TMP_DIR/$name"
		info "downloading $DOWNLOAD_URL/$name"
		download "$IMAGES" "$DOWNLOAD_URL/$name" progress
		verify "$IMAGES" "$SUMS" "$name"
	fi
}

# ---------------------------------------------------------------- install

install_binary() {
	$SUDO mkdir -p "$BIN_DIR"
	# Copy next to the target, then rename: a running bramble keeps its file.
	$SUDO cp "$BINARY" "$BIN_DIR/.bramble.new"
	$SUDO chmod 755 "$BIN_DIR/.bramble.new"
	$SUDO mv -f "$BIN_DIR/.bramble.new" "$BIN_DIR/bramble"
	info "installed $BIN_DIR/bramble"
}

# ours PATH: PATH is a symbolic link to bramble.
ours() {
	[ -L "$1" ] || return 1
	case "$(readlink "$1")" in
	bramble | "$BIN_DIR/bramble") return 0 ;;
	esac
	return 1
}

install_symlinks() {
	if [ "${INSTALL_BRAMBLE_SYMLINK:-}" = skip ]; then
		info "not creating the kubectl, crictl and ctr symlinks (INSTALL_BRAMBLE_SYMLINK=skip)"
		return
	fi
	for cmd in kubectl crictl ctr; do
		link="$BIN_DIR/$cmd"
		if [ "${INSTALL_BRAMBLE_SYMLINK:-}" != force ]; then
			if [ -e "$link" ] || [ -L "$link" ]; then
				if ! ours "$link"; then
					info "skipping $link: it exists and is not bramble's (INSTALL_BRAMBLE_SYMLINK=force replaces it)"
					continue
				fi
			elif other="$(command -v "$cmd" 2>/dev/null)" && [ -n "$other" ]; then
				info "skipping $cmd symlink: $other is on the PATH already (use 'bramble $cmd', or INSTALL_BRAMBLE_SYMLINK=force)"
				continue
			fi
		fi
		$SUDO ln -sfn bramble "$link"
		info "symlink $link -> bramble"
	done
}

install_killall() {
	"$BIN_DIR/bramble" killall-script >"$TMP_DIR/killall.sh" ||
		fatal "$BIN_DIR/bramble killall-script failed"
	$SUDO cp "$TMP_DIR/killall.sh" "$BIN_DIR/bramble-killall.sh"
	$SUDO chmod 755 "$BIN_DIR/bramble-killall.sh"
	info "installed $BIN_DIR/bramble-killall.sh"
}

install_uninstall() {
	f="$TMP_DIR/uninstall.sh"
	{
		cat <<EOF
#!/bin/sh
# bramble-uninstall.sh: written by install.sh. Stops bramble, runs
# bramble-killall.sh, and removes what install.sh installed and what the node
# left: the $SERVICE service, the binary and its symlinks, the data dir
# (certificates, datastore, images), kubelet, CNI and pod log directories and
# /etc/bramble. Nothing of it can be recovered afterwards.
set -u
[ "\$(id -u)" = 0 ] || { echo "bramble-uninstall.sh: must run as root" >&2; exit 1; }

BIN_DIR=$(quote "$BIN_DIR")
DATA_DIR=$(quote "$DATA_DIR")
SERVICE=$(quote "$SERVICE")
INIT=$(quote "$INIT")
SERVICE_FILE=$(quote "$SERVICE_FILE")
ENV_FILE=$(quote "$ENV_FILE")
EOF
		cat <<'EOF'

info() { printf '[INFO]  %s\n' "$*"; }

# The data dir is deleted below: never a system directory (/, /var, /usr,
# ...), also not through a symbolic link made after the install.
if [ -x "$BIN_DIR/bramble-killall.sh" ]; then
	"$BIN_DIR/bramble-killall.sh" --check --data-dir "$DATA_DIR" || exit 1
elif [ -x "$BIN_DIR/bramble" ]; then
	"$BIN_DIR/bramble" killall-script | sh -s -- --check --data-dir "$DATA_DIR" || exit 1
else
	echo "bramble-uninstall.sh: neither $BIN_DIR/bramble-killall.sh nor $BIN_DIR/bramble is there to check the data dir $DATA_DIR with; remove what is left by hand" >&2
	exit 1
fi

case "$INIT" in
systemd)
	if command -v systemctl >/dev/null 2>&1; then
		systemctl stop "$SERVICE" 2>/dev/null || :
		systemctl disable "$SERVICE" 2>/dev/null || :
	fi
	;;
openrc)
	rc-service "$SERVICE" stop 2>/dev/null || :
	rc-update del "$SERVICE" default 2>/dev/null || :
	;;
esac

if [ -x "$BIN_DIR/bramble-killall.sh" ]; then
	info "running bramble-killall.sh"
	"$BIN_DIR/bramble-killall.sh" -q --data-dir "$DATA_DIR" || :
fi

for f in "$SERVICE_FILE" "$ENV_FILE"; do
	[ -n "$f" ] && [ -e "$f" ] && rm -f "$f" && info "removed $f"
done
if [ "$INIT" = systemd ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload 2>/dev/null || :
	systemctl reset-failed "$SERVICE" 2>/dev/null || :
fi

for cmd in kubectl crictl ctr; do
	link="$BIN_DIR/$cmd"
	if [ -L "$link" ]; then
		case "$(readlink "$link")" in
		bramble | "$BIN_DIR/bramble") rm -f "$link" && info "removed $link" ;;
		esac
	fi
done

# What the node leaves behind (the killall script unmounted what was mounted).
for d in "$DATA_DIR" /etc/bramble /run/bramble /run/flannel /var/lib/kubelet \
	/var/lib/cni /var/log/pods /var/log/containers; do
	if [ -e "$d" ]; then
		rm -rf "$d" && info "removed $d"
	fi
done

rm -f "$BIN_DIR/bramble" "$BIN_DIR/bramble-killall.sh"
info "removed $BIN_DIR/bramble and $BIN_DIR/bramble-killall.sh"
rm -f "$0"
info "bramble is uninstalled"
EOF
	} >"$f"
	$SUDO cp "$f" "$BIN_DIR/bramble-uninstall.sh"
	$SUDO chmod 755 "$BIN_DIR/bramble-uninstall.sh"
	info "installed $BIN_DIR/bramble-uninstall.sh"
}

# install_images: the tarball next to the old one, then renamed over it (the
# name bramble does not import while it is copied).
install_images() {
	[ -n "$IMAGES" ] || return 0
	name="$(basename "$IMAGES")"
	$SUDO mkdir -p -m 700 "$DATA_DIR" "$DATA_DIR/agent" "$IMAGES_DIR"
	$SUDO chmod 700 "$IMAGES_DIR"
	$SUDO cp "$IMAGES" "$IMAGES_DIR/.$name.new"
	$SUDO chmod 644 "$IMAGES_DIR/.$name.new"
	$SUDO mv -f "$IMAGES_DIR/.$name.new" "$IMAGES_DIR/$name"
	info "installed $IMAGES_DIR/$name"
}

# ---------------------------------------------------------------- service

write_env_file() {
	f="$TMP_DIR/env"
	: >"$f"
	chmod 600 "$f"
	for name in $BRAMBLE_VARS; do
		eval "value=\${$name}"
		printf '%s=%s\n' "$name" "$(quote "$value")" >>"$f"
	done
	$SUDO mkdir -p "$(dirname "$ENV_FILE")"
	# Create it 0600 before it holds the token.
	# shellcheck disable=SC2016 # $1 expands in the inner shell
	$SUDO sh -c 'umask 077 && cat >"$1" && chmod 600 "$1"' sh "$ENV_FILE" <"$f"
	info "environment file $ENV_FILE (mode 0600)"
}

write_systemd_unit() {
	f="$TMP_DIR/unit"
	cat >"$f" <<EOF
[Unit]
Description=bramble $CMD: a small Kubernetes for Raspberry Pi clusters
Documentation=https://github.com/bramble-pi/bramble
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
# bramble sends READY=1 once its node is Ready.
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-$ENV_FILE
# Only bramble itself is stopped: containers keep running across restarts
# (bramble-killall.sh stops them all).
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN_DIR/bramble $CMD$EXEC_ARGS
EOF
	$SUDO mkdir -p "$SYSTEMD_DIR"
	$SUDO cp "$f" "$SERVICE_FILE"
	$SUDO chmod 644 "$SERVICE_FILE"
	info "systemd unit $SERVICE_FILE"
}

write_openrc_script() {
	f="$TMP_DIR/openrc"
	cat >"$f" <<EOF
#!/sbin/openrc-run
# shellcheck shell=sh disable=SC2034,SC1091 # openrc-run reads these variables; the env file is written at install
description="bramble $CMD: a small Kubernetes for Raspberry Pi clusters"

depend() {
	after network-online
	want cgroups
}

start_pre() {
	modprobe br_netfilter 2>/dev/null || :
	modprobe overlay 2>/dev/null || :
}

supervisor=supervise-daemon
name=$SERVICE
command=$(quote "$BIN_DIR/bramble")
command_args="$CMD$EXEC_ARGS"
output_log=/var/log/$SERVICE.log
error_log=/var/log/$SERVICE.log
pidfile=/var/run/$SERVICE.pid
respawn_delay=5
respawn_max=0

set -o allexport
if [ -f $(quote "$ENV_FILE") ]; then . $(quote "$ENV_FILE"); fi
set +o allexport
EOF
	$SUDO cp "$f" "$SERVICE_FILE"
	$SUDO chmod 755 "$SERVICE_FILE"
	info "OpenRC script $SERVICE_FILE"
}

start_service() {
	case "$INIT" in
	systemd)
		$SUDO systemctl daemon-reload
		if is_true "${INSTALL_BRAMBLE_SKIP_ENABLE:-}"; then
			info "not enabling or starting $SERVICE (INSTALL_BRAMBLE_SKIP_ENABLE): systemctl enable --now $SERVICE"
			return
		fi
		$SUDO systemctl enable "$SERVICE" >/dev/null 2>&1 || $SUDO systemctl enable "$SERVICE"
		info "enabled $SERVICE"
		if is_true "${INSTALL_BRAMBLE_SKIP_START:-}"; then
			info "not starting $SERVICE (INSTALL_BRAMBLE_SKIP_START): systemctl start $SERVICE"
			return
		fi
		info "starting $SERVICE (returns once the node is Ready)"
		$SUDO systemctl restart "$SERVICE"
		;;
	openrc)
		if is_true "${INSTALL_BRAMBLE_SKIP_ENABLE:-}"; then
			info "not enabling or starting $SERVICE (INSTALL_BRAMBLE_SKIP_ENABLE): rc-update add $SERVICE default && rc-service $SERVICE start"
			return
		fi
		$SUDO rc-update add "$SERVICE" default >/dev/null
		info "enabled $SERVICE"
		if is_true "${INSTALL_BRAMBLE_SKIP_START:-}"; then
			info "not starting $SERVICE (INSTALL_BRAMBLE_SKIP_START): rc-service $SERVICE start"
			return
		fi
		$SUDO rc-service "$SERVICE" restart
		;;
	none)
		info "no init system found (neither systemd nor OpenRC): start bramble yourself, e.g."
		# The modules the systemd unit and the OpenRC script load first
		# (nothing else loads them at boot on such a host).
		info "  sudo sh -c \"modprobe br_netfilter; modprobe overlay; set -a; . $ENV_FILE; set +a; exec $BIN_DIR/bramble $CMD$EXEC_ARGS >/var/log/$SERVICE.log 2>&1\" &"
		info "stop it with $BIN_DIR/bramble-killall.sh"
		;;
	esac
}

# ---------------------------------------------------------------- host check

# install_packages installs, with apt-get, the Debian packages whose commands
# a node runs and this host lacks (online installs only).
install_packages() {
	if is_true "${INSTALL_BRAMBLE_SKIP_DOWNLOAD:-}" || is_true "${INSTALL_BRAMBLE_SKIP_PACKAGES:-}"; then
		return 0
	fi
	case "$DOWNLOAD_URL" in
	https://*) ;;
	*) return 0 ;; # files from a local directory: maybe no network either
	esac
	missing=""
	for pc in iptables:iptables-restore ipset:ipset; do
		PATH="$PATH:/usr/sbin:/sbin" command -v "${pc#*:}" >/dev/null 2>&1 || missing="$missing ${pc%%:*}"
	done
	[ -n "$missing" ] || return 0
	if ! command -v apt-get >/dev/null 2>&1; then
		warn "this host lacks the packages$missing and has no apt-get: install them with its package manager"
		return 0
	fi
	info "installing the Debian packages$missing (NetworkPolicies need them; INSTALL_BRAMBLE_SKIP_PACKAGES=true skips this)"
	# A fresh Raspberry Pi OS image may have no package lists yet: update
	# them when the first attempt fails.
	# shellcheck disable=SC2086 # one word per package
	if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >"$TMP_DIR/apt" 2>&1 &&
		! { $SUDO apt-get update >>"$TMP_DIR/apt" 2>&1 &&
			$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >>"$TMP_DIR/apt" 2>&1; }; then
		warn "apt-get install$missing failed; install them by hand. Its last lines:"
		tail -n 5 "$TMP_DIR/apt" >&2
	fi
	return 0
}

check_host() {
	if "$BIN_DIR/bramble" check-config >"$TMP_DIR/check" 2>&1; then
		info "bramble check-config: everything required is there"
	else
		warn "bramble check-config found something missing; bramble will not run a node until it is fixed:"
		grep -e '\[MISSING\]' "$TMP_DIR/check" >&2 || cat "$TMP_DIR/check" >&2
	fi
	if is_true "${INSTALL_BRAMBLE_FIX_CGROUPS:-}"; then
		# The same edit as `bramble check-config --fix-cgroups` (one copy
		# of the logic, in the binary).
		$SUDO "$BIN_DIR/bramble" check-config --fix-cgroups >"$TMP_DIR/fix" 2>&1 || :
		sed -n 's/^fix-cgroups: //p; /^  before: /p; /^  after: /p' "$TMP_DIR/fix"
		grep -q '^bramble: ' "$TMP_DIR/fix" && sed -n 's/^bramble: //p' "$TMP_DIR/fix" >&2
	elif grep -q '\[MISSING\] cgroup controller memory:.*cmdline.txt' "$TMP_DIR/check"; then
		warn "rerun with INSTALL_BRAMBLE_FIX_CGROUPS=true to make that cmdline.txt change, then reboot"
	fi
	return 0
}

# ---------------------------------------------------------------- main

main() {
	setup_env "$@"
	setup_arch
	setup_init
	setup_tmp
	get_sums
	get_binary
	check_data_dir
	get_images
	install_binary
	install_images
	install_symlinks
	install_killall
	install_uninstall
	write_env_file
	case "$INIT" in
	systemd) write_systemd_unit ;;
	openrc) write_openrc_script ;;
	esac
	install_packages
	check_host
	start_service
	info "done: uninstall with $BIN_DIR/bramble-uninstall.sh"
}

main "$@"
