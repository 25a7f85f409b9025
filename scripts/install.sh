#!/usr/bin/env bash
# Installs (or, with --uninstall, removes) nexcage the way a Debian/Proxmox
# admin expects: the binary in $PREFIX/bin, gzipped man pages, and the bash,
# zsh and fish completions where those shells look. `make install`,
# `make uninstall` and scripts/deb.sh all go through here, so a .deb and a
# `make install` hold the same files.
#
# Environment (all optional):
#   BIN             binary to install                    (bin/nexcage)
#   COMPLETION_BIN  binary run to print the completions  ($BIN); deb.sh sets
#                   it to a host binary when BIN is cross-compiled
#   DESTDIR         staging root prepended to every path ("")
#   PREFIX          (/usr/local)
#   BINDIR MANDIR BASHCOMPDIR ZSHCOMPDIR FISHCOMPDIR  override single paths
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
man_src="$repo_root/docs/man"

die() {
	echo "install: $*" >&2
	exit 1
}

mode=install
case "${1:-}" in
"") ;;
--uninstall) mode=uninstall ;;
*) die "unknown argument '$1' (only --uninstall)" ;;
esac

BIN="${BIN:-$repo_root/bin/nexcage}"
COMPLETION_BIN="${COMPLETION_BIN:-$BIN}"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/usr/local}"
PREFIX="${PREFIX%/}"
BINDIR="${BINDIR:-$PREFIX/bin}"
MANDIR="${MANDIR:-$PREFIX/share/man}"
BASHCOMPDIR="${BASHCOMPDIR:-$PREFIX/share/bash-completion/completions}"
# Debian's zsh searches vendor-completions only under /usr; under any other
# prefix (/usr/local) site-functions is the directory in its default fpath.
if [[ -z "${ZSHCOMPDIR:-}" ]]; then
	if [[ "$PREFIX" == /usr ]]; then
		ZSHCOMPDIR="$PREFIX/share/zsh/vendor-completions"
	else
		ZSHCOMPDIR="$PREFIX/share/zsh/site-functions"
	fi
fi
FISHCOMPDIR="${FISHCOMPDIR:-$PREFIX/share/fish/vendor_completions.d}"

bash_comp="$DESTDIR$BASHCOMPDIR/nexcage"
zsh_comp="$DESTDIR$ZSHCOMPDIR/_nexcage"
fish_comp="$DESTDIR$FISHCOMPDIR/nexcage.fish"
man1="$DESTDIR$MANDIR/man1"

shopt -s nullglob
man_pages=("$man_src"/*.1)
shopt -u nullglob

if [[ "$mode" == uninstall ]]; then
	rm -f "$DESTDIR$BINDIR/nexcage" "$bash_comp" "$zsh_comp" "$fish_comp"
	# Pages of subcommands that docs/man no longer has are ours too.
	rm -f "$man1"/nexcage.1.gz "$man1"/nexcage-*.1.gz
	for page in "${man_pages[@]+"${man_pages[@]}"}"; do
		rm -f "$man1/$(basename "$page").gz"
	done
	echo "uninstall: removed nexcage from $DESTDIR$PREFIX"
	exit 0
fi

[[ -x "$BIN" ]] || die "$BIN is not an executable; run 'make build' first"
[[ -x "$COMPLETION_BIN" ]] || die "$COMPLETION_BIN is not an executable"
((${#man_pages[@]} > 0)) || die "no man pages in $man_src (docs/man/*.1): they are generated from the CLI and committed"

# Everything that can fail is produced before anything is installed, so a
# failure never leaves half an installation behind.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for shell in bash zsh fish; do
	if ! "$COMPLETION_BIN" completion "$shell" >"$work/completion.$shell" 2>"$work/err"; then
		die "'$COMPLETION_BIN completion $shell' failed: $(cat "$work/err")"
	fi
	[[ -s "$work/completion.$shell" ]] || die "'$COMPLETION_BIN completion $shell' printed nothing"
done
# compinit autoloads a file from fpath only when its first line says so.
[[ "$(head -n1 "$work/completion.zsh")" == "#compdef nexcage"* ]] ||
	die "'$COMPLETION_BIN completion zsh' does not start with '#compdef nexcage': zsh would not load it"

for page in "${man_pages[@]}"; do
	[[ -s "$page" ]] || die "man page $page is empty"
	# -n: no name or time stamp in the header, so the .gz is reproducible.
	gzip -9n <"$page" >"$work/$(basename "$page").gz"
done

install -D -m 0755 "$BIN" "$DESTDIR$BINDIR/nexcage"
for page in "${man_pages[@]}"; do
	install -D -m 0644 "$work/$(basename "$page").gz" "$man1/$(basename "$page").gz"
done
install -D -m 0644 "$work/completion.bash" "$bash_comp"
install -D -m 0644 "$work/completion.zsh" "$zsh_comp"
install -D -m 0644 "$work/completion.fish" "$fish_comp"
echo "install: nexcage in $DESTDIR$BINDIR, ${#man_pages[@]} man page(s) in $man1, completions for bash, zsh and fish"
