#!/usr/bin/env bash
# Installs, from Debian's packages, every tool that nexcage's tests and
# benchmarks run. Idempotent: when everything is present it touches neither
# apt nor the network, so `make test` can call it on every run.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# command -> Debian package. Paths are absolute where PATH lookup would lie:
# `command -v time` answers with bash's keyword, and /usr/sbin is not on a
# normal user's PATH (debootstrap lives there).
tools=(
	"docker-registry:docker-registry"
	"skopeo:skopeo"
	"umoci:umoci"
	"buildah:buildah"
	"lxc-start:lxc"
	"lxc-usernsexec:lxc"
	"lxc-attach:lxc"
	"newuidmap:uidmap"
	"newgidmap:uidmap"
	"pigz:pigz"
	"zstd:zstd"
	"xz:xz-utils"
	"tar:tar"
	"debootstrap:debootstrap"
	"dpkg-deb:dpkg"
	"lintian:lintian"
	"/usr/bin/time:time"
	"mandoc:mandoc"
	"man:man-db"
	"groff:groff-base"
	"zsh:zsh"
	"fish:fish"
)

# The Debian Perl modules Proxmox VE's own code loads, for the tests that
# ask it (NEXCAGE_PVE_ORACLE, see internal/pveoracle): installed only when
# that variable names an oracle, as .ci/run does.
oracle_pkgs=(
	perl libanyevent-perl libclone-perl libcrypt-openssl-random-perl libcrypt-openssl-rsa-perl
	libdevel-cycle-perl libfilesys-df-perl libhttp-daemon-perl libhttp-message-perl
	libio-stringy-perl libjson-perl libjson-xs-perl liblinux-inotify2-perl libmime-base32-perl
	libnet-dbus-perl libnet-ip-perl libnet-ldap-perl libnet-ssleay-perl libnetaddr-ip-perl
	libstring-shellquote-perl libtimedate-perl liburi-perl libwww-perl libyaml-libyaml-perl
	libcrypt-ssleay-perl libdigest-hmac-perl libuuid-perl libfile-chdir-perl libposix-strptime-perl
	libxml-libxml-perl libauthen-pam-perl librrds-perl libio-multiplex-perl libnet-subnet-perl
	libclass-methodmaker-perl libterm-readline-gnu-perl libtest-mockmodule-perl
)

# lxc-usernsexec -m u:0:100000:65536 is refused unless root owns that range.
subid_entry="root:100000:65536"

have_cmd() {
	local cmd="$1" dir
	if [[ "$cmd" == /* ]]; then
		[[ -x "$cmd" ]]
		return
	fi
	if [[ "$(type -t "$cmd" 2>/dev/null)" == "file" ]]; then
		return 0
	fi
	for dir in /usr/sbin /sbin /usr/local/sbin; do
		[[ -x "$dir/$cmd" ]] && return 0
	done
	return 1
}

missing_cmds=()
missing_pkgs=()
scan() {
	missing_cmds=()
	missing_pkgs=()
	local entry cmd pkg p seen
	for entry in "${tools[@]}"; do
		cmd="${entry%%:*}"
		pkg="${entry#*:}"
		have_cmd "$cmd" && continue
		missing_cmds+=("$cmd ($pkg)")
		seen=0
		for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
			[[ "$p" == "$pkg" ]] && seen=1
		done
		((seen)) || missing_pkgs+=("$pkg")
	done
	if [[ -n "${NEXCAGE_PVE_ORACLE:-}" ]]; then
		for pkg in "${oracle_pkgs[@]}"; do
			[[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] && continue
			missing_cmds+=("Perl module package $pkg (for $NEXCAGE_PVE_ORACLE)")
			missing_pkgs+=("$pkg")
		done
	fi
}

missing_subid=()
scan_subid() {
	missing_subid=()
	local f
	for f in /etc/subuid /etc/subgid; do
		grep -qxF "$subid_entry" "$f" 2>/dev/null || missing_subid+=("$f")
	done
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

status=0

scan
scan_subid

if ((${#missing_pkgs[@]} > 0)); then
	if ! is_root; then
		echo "install-deps: missing tools:" >&2
		printf '  %s\n' "${missing_cmds[@]}" >&2
		echo "install-deps: as root, run:" >&2
		echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
		echo "  (or: sudo $repo_root/scripts/install-deps.sh)" >&2
		status=1
	else
		echo "install-deps: installing ${missing_pkgs[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"
		scan
		if ((${#missing_pkgs[@]} > 0)); then
			echo "install-deps: still missing after apt-get install:" >&2
			printf '  %s\n' "${missing_cmds[@]}" >&2
			status=1
		fi
	fi
fi

if ((${#missing_subid[@]} > 0)); then
	if ! is_root; then
		echo "install-deps: '$subid_entry' is missing from: ${missing_subid[*]}" >&2
		echo "install-deps: as root, run:" >&2
		for f in "${missing_subid[@]}"; do
			echo "  echo '$subid_entry' | sudo tee -a $f" >&2
		done
		status=1
	else
		for f in "${missing_subid[@]}"; do
			# Guard against gluing our line onto a last line that lacks its newline.
			if [[ -s "$f" && -n "$(tail -c1 "$f")" ]]; then
				echo >>"$f"
			fi
			echo "$subid_entry" >>"$f"
			echo "install-deps: added $subid_entry to $f"
		done
	fi
fi

# Go is not taken from apt: Debian 12's golang-go (1.19) is far older than
# what go.mod asks for.
want_go="$(sed -n 's/^go \([0-9][0-9.]*\).*/\1/p' "$repo_root/go.mod" 2>/dev/null | head -n1)"
go_bin="$(command -v go 2>/dev/null || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
	# sudo's secure_path drops /usr/local/go/bin; Go is there, just not on PATH.
	go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
	echo "install-deps: Go is not installed (go.mod wants go ${want_go:-?})." >&2
	echo "  Install the official Go ${want_go:-} toolchain under /usr/local/go (see https://go.dev/doc/install)" >&2
	echo "  and add /usr/local/go/bin to PATH; Debian's golang-go package is too old." >&2
	status=1
else
	go_ver="$("$go_bin" version 2>/dev/null | awk '{print $3}' | sed 's/^go//')"
	if [[ -n "$want_go" && -n "$go_ver" ]] &&
		[[ "$(printf '%s\n%s\n' "$want_go" "$go_ver" | sort -V | head -n1)" != "$want_go" ]]; then
		echo "install-deps: $go_bin is go$go_ver, go.mod wants go$want_go or newer." >&2
		echo "  Install Go $want_go or newer under /usr/local/go (see https://go.dev/doc/install)." >&2
		status=1
	fi
fi

if ((status == 0)); then
	echo "install-deps: all tools present"
fi
exit "$status"
