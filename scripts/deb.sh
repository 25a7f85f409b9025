#!/usr/bin/env bash
# Builds the Debian packages nexcage_VERSION_ARCH.deb for amd64 and arm64
# with dpkg-deb: the static binary (cross-compiled, CGO_ENABLED=0), the man
# pages and completions installed by scripts/install.sh under /usr, and
# /usr/share/doc/nexcage/{copyright,changelog.gz}. No root or fakeroot is
# needed: --root-owner-group makes every file root:root.
#
# Environment (all optional):
#   OUT          output directory                      (build/deb)
#   ARCHES       Debian architectures to build         ("amd64 arm64")
#   GO           go command                            (go)
#   VERSION      version the binary reports            (git describe, as the Makefile)
#   DEB_VERSION  Debian package version                (derived from git, see deb_version)
#   MAINTAINER   Maintainer field                      (last commit's author)
set -euo pipefail
umask 022

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

die() {
	echo "deb: $*" >&2
	exit 1
}

OUT="${OUT:-build/deb}"
ARCHES="${ARCHES:-amd64 arm64}"
GO="${GO:-go}"
have_git() { git rev-parse --git-dir >/dev/null 2>&1; }

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"

# Reproducible: every time stamp is the last commit's, not the build's.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
	SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

# deb_version maps git describe onto a Debian version that sorts right:
#   tag v1.2.3, on the tag        -> 1.2.3
#   tag v1.2.0-rc1, on the tag    -> 1.2.0~rc1  (before 1.2.0)
#   5 commits after tag v1.2.3    -> 1.2.3+git20260102.5.abc1234
#   no tag                        -> 0.0~git20260102.abc1234
#   uncommitted changes           -> ...+dirty
deb_version() {
	have_git || {
		echo "0.0~dev"
		return
	}
	local date hash desc tag n v dirty=""
	date="$(TZ=UTC git log -1 --date=format-local:%Y%m%d --format=%cd)"
	hash="$(git rev-parse --short=7 HEAD)"
	if ! git diff --quiet HEAD -- 2>/dev/null; then
		dirty="+dirty"
	fi
	if desc="$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null)"; then
		# v1.2.3-rc1-5-gabc1234: the tag itself may contain dashes.
		n="${desc%-g*}"
		n="${n##*-}"
		tag="${desc%-*-g*}"
		v="${tag#v}"
		v="${v//-/\~}"
		v="${v//_/.}"
		if [[ "$n" != 0 ]]; then
			v="$v+git$date.$n.$hash"
		fi
	else
		v="0.0~git$date.$hash"
	fi
	echo "$v$dirty"
}

DEB_VERSION="${DEB_VERSION:-$(deb_version)}"
dpkg --validate-version "$DEB_VERSION" 2>/dev/null ||
	die "'$DEB_VERSION' is not a valid Debian version (set DEB_VERSION)"

if [[ -z "${MAINTAINER:-}" ]]; then
	MAINTAINER="$(git log -1 --format='%an <%ae>' 2>/dev/null || true)"
fi
[[ "$MAINTAINER" == *"<"*@*">" ]] || die "Maintainer '$MAINTAINER' is not 'Name <email>' (set MAINTAINER)"

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian package dpkg)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

ldflags="-s -w -X main.version=$VERSION"
build() { # GOARCH OUTPUT
	echo "deb: go build GOARCH=$1"
	CGO_ENABLED=0 GOOS=linux GOARCH="$1" "$GO" build -trimpath -ldflags "$ldflags" -o "$2" ./cmd/nexcage
}

# Completions come from running the binary, which only a host build can do.
host_arch="$("$GO" env GOHOSTARCH)"
host_bin="$work/host/nexcage"
build "$host_arch" "$host_bin"

# The copyright file must carry the notice of every module linked in (BSD,
# MIT and Apache licences all ask for it in binary redistributions), so it
# is generated from the module graph of the very build being packaged.
write_copyright() { # OUTPUT
	local out="$1" mods path dir lic noticef first header src
	local -a lics names
	{
		echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
		echo "Upstream-Name: nexcage"
		echo "Source: https://github.com/nexcage/nexcage"
		echo
		echo "Files: *"
		echo "Copyright: the nexcage authors"
		if [[ -f LICENSE ]]; then
			echo "License: nexcage"
			sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' LICENSE
		else
			echo "License: nexcage-unstated"
			echo " The nexcage source tree carries no LICENSE file."
		fi
		echo
		echo "Files: go/*"
		echo "Copyright: The Go Authors"
		echo "License: BSD-3-clause"
		echo "Comment: the Go standard library and runtime, linked into the static binary"
		sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$("$GO" env GOROOT)/LICENSE"
	} >"$out"
	mods="$(for a in $ARCHES; do
		GOOS=linux GOARCH="$a" CGO_ENABLED=0 "$GO" list -deps \
			-f '{{with .Module}}{{if not .Main}}{{.Path}}@{{.Version}} {{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}{{end}}{{end}}' \
			./cmd/nexcage
	done | sort -u)"
	while read -r path dir; do
		[[ -n "$path" ]] || continue
		# Some modules carry several (filepath-securejoin: BSD and MPL-2.0).
		mapfile -t lics < <(find "$dir" -maxdepth 1 -type f \( -iname 'LICEN[CS]E*' -o -iname 'COPYING*' \) | LC_ALL=C sort)
		if ((${#lics[@]} == 0)); then
			# A subdirectory module (rootless-containers/proto/go-proto) may
			# state its licence only in its sources' header comments.
			header="$work/licence-header"
			src="$(grep -l -m1 -E 'Licen[cs]ed under|Copyright' "$dir"/*.go 2>/dev/null | head -n1 || true)"
			[[ -n "$src" ]] || die "module $path states no licence in $dir (no LICENSE file, no header)"
			awk '/^package /{exit} {print}' "$src" | sed -E 's#^[[:space:]]*(//|/\*+|\*+/|\*)[[:space:]]?##' >"$header"
			lics=("$header")
		fi
		names=()
		for lic in "${lics[@]}"; do
			names+=("$(licence_name "$lic")")
		done
		{
			echo
			echo "Files: vendor/${path%@*}/*"
			echo "Copyright: $(licence_holders "${lics[0]}" "${path%@*}")"
			echo "License: $(printf '%s\n' "${names[@]}" | sed 's/ and /\n/g' | awk '!seen[$0]++' | paste -sd '|' | sed 's/|/ and /g')"
			first=1
			for lic in "${lics[@]}"; do
				((first)) || echo " ."
				first=0
				licence_text "$lic"
			done
			noticef="$dir/NOTICE"
			if [[ -f "$noticef" ]]; then
				echo " ."
				echo " NOTICE:"
				sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$noticef"
			fi
		} >>"$out"
	done <<<"$mods"
}

licence_holders() { # LICENCE-FILE MODULE
	local who
	who="$(grep -m1 -iE '^[[:space:]]*copyright[[:space:]]+(\(c\)|©|[0-9])' "$1" | sed -E 's/^[[:space:]]*[Cc]opyright[[:space:]]+(\([cC]\)[[:space:]]*|©[[:space:]]*)?//' || true)"
	echo "${who:-the authors of $2}"
}

# licence_text prints a licence for a DEP-5 paragraph. Debian ships the
# texts of Apache-2.0 and MPL-2.0 on every system, and policy (and lintian)
# wants them referred to, not repeated; the short permissive ones are
# copied, as they must be, whole.
licence_text() { # LICENCE-FILE
	local name
	name="$(licence_name "$1")"
	# Only a file holding that one licence alone is shortened.
	case "$name" in
	Apache-2.0 | MPL-2.0)
		if grep -qE '^[[:space:]]*(TERMS AND CONDITIONS|1\. Definitions)' "$1"; then
			echo " On Debian systems, the full text of the $name licence is in"
			echo " /usr/share/common-licenses/$name."
			return
		fi
		;;
	esac
	# A file that bundles Apache-2.0 with others keeps the others whole and
	# points to Debian's copy for the Apache terms.
	awk '/TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION/ {
			print "   [Terms of the Apache License 2.0: on Debian systems in /usr/share/common-licenses/Apache-2.0]"
			skip = 1; next
		}
		skip && /END OF TERMS AND CONDITIONS/ { skip = 0; next }
		!skip' "$1" | sed -e 's/^[[:space:]]*$/./' -e 's/^/ /'
}

# licence_name names the licences in a file; one file may hold several
# (klauspost/compress: BSD-3-clause, Apache-2.0 and Expat).
licence_name() { # LICENCE-FILE
	local f="$1" names=()
	if grep -q "Apache License" "$f" && grep -q "Version 2.0" "$f"; then
		names+=("Apache-2.0")
	fi
	grep -q "Mozilla Public License" "$f" && names+=("MPL-2.0")
	grep -q "Permission is hereby granted, free of charge" "$f" && names+=("Expat")
	if grep -q "Redistribution and use" "$f"; then
		if grep -q "Neither the name" "$f"; then
			names+=("BSD-3-clause")
		else
			names+=("BSD-2-clause")
		fi
	fi
	((${#names[@]} > 0)) || names=("other")
	local IFS='|'
	echo "${names[*]}" | sed 's/|/ and /g'
}

# A native-versioned package (no Debian revision) documents its history in
# changelog.gz; one entry naming the commit it was built from.
write_changelog() { # OUTPUT
	{
		echo "nexcage ($DEB_VERSION) unstable; urgency=medium"
		echo
		echo "  * Built from git $(git rev-parse HEAD 2>/dev/null || echo unknown) ($VERSION)."
		echo
		echo " -- $MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$1"
}

mkdir -p "$OUT"
for arch in $ARCHES; do
	case "$arch" in
	amd64 | arm64 | armhf | i386 | ppc64el | riscv64 | s390x) ;;
	*) die "unsupported architecture $arch" ;;
	esac
	goarch="$arch"
	case "$arch" in
	armhf) goarch=arm ;;
	i386) goarch=386 ;;
	ppc64el) goarch=ppc64le ;;
	esac
	bin="$work/$arch/nexcage"
	if [[ "$goarch" == "$host_arch" ]]; then
		bin="$host_bin"
	else
		GOARM=7 build "$goarch" "$bin"
	fi

	root="$work/root-$arch"
	BIN="$bin" COMPLETION_BIN="$host_bin" DESTDIR="$root" PREFIX=/usr MANDIR=/usr/share/man \
		scripts/install.sh >/dev/null

	doc="$root/usr/share/doc/nexcage"
	mkdir -p "$doc"
	write_copyright "$doc/copyright"
	write_changelog "$doc/changelog.gz"
	# Lintian exempts Go binaries from statically-linked-binary only when it
	# sees a source package build-depending on golang-go; a dpkg-deb build
	# has none, so say it here: static is the point (no libc needed).
	mkdir -p "$root/usr/share/lintian/overrides"
	printf '%s\n' "# Go binary, static on purpose (CGO_ENABLED=0): it runs on any PVE host." \
		"nexcage: statically-linked-binary [usr/bin/nexcage]" >"$root/usr/share/lintian/overrides/nexcage"

	mkdir -p "$root/DEBIAN"
	(cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
	size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
	# nexcage shells out to nothing but Proxmox VE's own tools: pct (from
	# pve-container), pvesm (libpve-storage-perl), pvesh and pveversion
	# (pve-manager), for deploy, create and the host checks. Pulling,
	# unpacking and converting need no other program, so a plain Debian host
	# can build templates: the PVE tools are recommended, not required.
	cat >"$root/DEBIAN/control" <<EOF
Package: nexcage
Version: $DEB_VERSION
Architecture: $arch
Maintainer: $MAINTAINER
Installed-Size: $size
Section: admin
Priority: optional
Recommends: pve-manager
Homepage: https://github.com/nexcage/nexcage
Description: turn OCI container images into Proxmox VE LXC templates
 nexcage pulls OCI images from a registry, an OCI layout or an archive,
 unpacks them and converts them into Proxmox VE LXC container templates
 (.tar.zst) with the matching container configuration, getting every
 file, owner, extended attribute and whiteout right. It then deploys them
 with a validated pct create that is undone on failure.
 .
 It is a single static binary: building templates needs nothing else;
 deploying them needs the Proxmox VE tools pct, pvesm and pvesh.
EOF
	chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
	find "$root" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

	deb="$OUT/nexcage_${DEB_VERSION}_${arch}.deb"
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
	echo "deb: $deb"
done
