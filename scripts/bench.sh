#!/usr/bin/env bash
# make bench: times nexcage build against the shell pipeline it replaces and
# against the floor (decompress + recompress the same bytes), on the same
# image in the same run. Prints medians of wall time, CPU time and peak RSS,
# and the ratios nexcage/anchor and nexcage/floor.
#
# The benchmark image is made once and cached in $BENCH_DIR: a Debian
# bookworm rootfs from debootstrap (minbase + python3, perl,
# openssh-server) as one gzip layer, and a second layer that deletes
# /usr/share/doc and adds a few thousand files, pushed to a docker-registry
# process on a loopback port.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${BENCH_DIR:-$repo/build/bench}"
runs="${BENCH_RUNS:-5}"
extra_files="${BENCH_EXTRA_FILES:-3000}"

if [[ "$(id -u)" -ne 0 ]]; then
	echo "bench: run as root (debootstrap and the umoci anchor need it)" >&2
	exit 1
fi
"$repo/scripts/install-deps.sh" >&2
mkdir -p "$work"
bin="$work/nexcage"
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/nexcage)

debian_mirror() {
	# The machine's own Debian mirror, as apt is configured to use it.
	local m=""
	if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
		m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [[ -z "$m" && -f /etc/apt/sources.list ]]; then
		m=$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list)
	fi
	echo "${m:?no Debian mirror configured for apt}"
}

# app_layer DIR NAME N OUT: an application layer for the bench base in
# DIR, written to OUT: a whiteout of /usr/share/doc and N small text files
# in /opt/NAME.
app_layer() {
	local dir=$1 name=$2 n=$3 out=$4 i
	mkdir -p "$dir/usr/share" "$dir/opt/$name"
	: >"$dir/usr/share/.wh.doc"
	for i in $(seq 1 "$n"); do
		head -c $((512 + (i * 37) % 8192)) /dev/urandom | base64 >"$dir/opt/$name/file-$i.txt"
	done
	tar --numeric-owner --sort=name -C "$dir" -cf - . | pigz -6 >"$out"
}

make_image() {
	[[ -f "$work/image.done" ]] && return
	echo "bench: preparing the benchmark image in $work (once)" >&2
	rm -rf "$work/upper" "$work/layout"
	if [[ ! -f "$work/rootfs.done" ]]; then
		rm -rf "$work/rootfs"
		/usr/sbin/debootstrap --variant=minbase --include=python3,perl,openssh-server \
			bookworm "$work/rootfs" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 ||
			{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
		rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb
		touch "$work/rootfs.done"
	fi
	tar --numeric-owner --xattrs --sort=name -C "$work/rootfs" -cf - . | pigz -6 >"$work/layer1.tar.gz"
	app_layer "$work/upper" bench "$extra_files" "$work/layer2.tar.gz"
	(cd "$repo" && go run ./testdata/bench "$work/layout" "$work/layer1.tar.gz" "$work/layer2.tar.gz")
	touch "$work/image.done"
}

# A second image of 60 layers (3,000 small files in all): peak RSS must
# not grow with the layer count either.
make_many() {
	[[ -f "$work/many.done" ]] && return
	rm -rf "$work/many" "$work/many-layout"
	mkdir -p "$work/many"
	for l in $(seq 1 60); do
		mkdir -p "$work/many/$l/layer$l"
		for i in $(seq 1 50); do
			head -c $((20000 + (i * 977) % 60000)) /dev/urandom | base64 >"$work/many/$l/layer$l/f$i"
		done
		tar --numeric-owner --sort=name -C "$work/many/$l" -cf - . | pigz -6 >"$work/many/$l.tar.gz"
	done
	(cd "$repo" && go run ./testdata/bench -data "$work/many-layout" $(for l in $(seq 1 60); do echo "$work/many/$l.tar.gz"; done))
	touch "$work/many.done"
}

# Images FROM the bench base: its Debian layer plus an application layer of
# their own (the same whiteout, other files). "shared" is built into the
# store the bench image was just built into, and cold into an empty one;
# f1..f8 are the factory, built together with --jobs 2.
make_shared() {
	[[ -f "$work/shared.done" ]] && return
	local name n
	for name in shared f1 f2 f3 f4 f5 f6 f7 f8; do
		n=300
		[[ "$name" == shared ]] && n="$extra_files"
		rm -rf "$work/app-$name" "$work/$name-layout"
		app_layer "$work/app-$name" "$name" "$n" "$work/app-$name.tar.gz"
		(cd "$repo" && go run ./testdata/bench "$work/$name-layout" "$work/layer1.tar.gz" "$work/app-$name.tar.gz")
	done
	touch "$work/shared.done"
}

# A ~2 GB image: the bench base plus a layer of large files, 1 GiB of
# random bytes (incompressible) and ~0.6 GB of text (base64 and numbers),
# the case where peak RSS must still stay under 150 MiB.
make_big() {
	[[ -f "$work/big.done" ]] && return
	echo "bench: preparing the 2 GB image in $work (once)" >&2
	rm -rf "$work/big" "$work/big-layout"
	mkdir -p "$work/big/opt/big"
	for i in $(seq 1 8); do
		head -c $((128 << 20)) /dev/urandom >"$work/big/opt/big/random-$i.bin"
	done
	for i in $(seq 1 3); do
		head -c $((96 << 20)) /dev/urandom | base64 >"$work/big/opt/big/text-$i.txt"
	done
	seq 1 30000000 >"$work/big/opt/big/numbers.txt"
	tar --numeric-owner --sort=name -C "$work/big" -cf - . | pigz -6 >"$work/big.tar.gz"
	rm -rf "$work/big"
	(cd "$repo" && go run ./testdata/bench "$work/big-layout" "$work/layer1.tar.gz" "$work/big.tar.gz")
	touch "$work/big.done"
}

start_registry() {
	local port
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	mkdir -p "$work/registry"
	cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port, secret: bench}
EOF
	docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
	registry_pid=$!
	trap 'kill $registry_pid 2>/dev/null || true' EXIT
	for _ in $(seq 1 100); do
		curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	skopeo copy -q --dest-tls-verify=false "oci:$work/layout:bench" "docker://127.0.0.1:$port/bench:1" >&2
	skopeo copy -q --dest-tls-verify=false "oci:$work/many-layout:bench" "docker://127.0.0.1:$port/many:1" >&2
	for name in shared f1 f2 f3 f4 f5 f6 f7 f8 big; do
		skopeo copy -q --dest-tls-verify=false "oci:$work/$name-layout:bench" "docker://127.0.0.1:$port/$name:1" >&2
	done
	image="127.0.0.1:$port/bench:1"
}

# measure NAME COMMAND: one timed run, appended to $work/times.
measure() {
	local name="$1"
	shift
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
	/usr/bin/time -f "$name %e %U %S %M" -a -o "$work/times" bash -c "$*" >/dev/null 2>"$work/$name.err" ||
		{ echo "bench: $name failed:" >&2; cat "$work/$name.err" >&2; exit 1; }
}

make_image
make_many
make_shared
make_big
# BENCH_PREPARE=1: only make the images (they take minutes, once).
[[ -n "${BENCH_PREPARE:-}" ]] && exit 0
start_registry
# layer_blobs LAYOUT: the paths of an OCI layout's layer blobs, in order.
layer_blobs() {
	python3 - "$1" <<'EOF'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs/sha256", idx["manifests"][0]["digest"].split(":")[1])))
print(" ".join(os.path.join(d, "blobs/sha256", l["digest"].split(":")[1]) for l in m["layers"]))
EOF
}
blobs=$(layer_blobs "$work/layout")
bigblobs=$(layer_blobs "$work/big-layout")
factory=$(printf "docker://${image%/bench:1}/f%d:1 " 1 2 3 4 5 6 7 8)
rm -f "$work/times"
for r in $(seq 1 "$runs"); do
	echo "bench: run $r of $runs" >&2
	rm -rf "$work/run" && mkdir -p "$work/run"
	measure nexcage "'$bin' build -q --store '$work/run/store' --name bench --template-version 1 docker://$image -o '$work/run/nexcage/'"
	# The same build again: the template is up to date (the cache hit).
	measure hit "'$bin' build -q --store '$work/run/store' --name bench --template-version 1 docker://$image -o '$work/run/nexcage/'"
	measure anchor "skopeo copy -q --src-tls-verify=false docker://$image oci:'$work/run/oci':bench &&
		umoci unpack --image '$work/run/oci':bench '$work/run/bundle' &&
		tar --numeric-owner --xattrs -C '$work/run/bundle/rootfs' -cpf - . | zstd -q -T0 -3 >'$work/run/anchor.tar.zst'"
	measure floor "for b in $blobs; do pigz -dc \$b; done | zstd -q -T0 -3 >/dev/null"
	measure many "'$bin' build -q --store '$work/run/store' --name many --template-version 1 docker://${image%/bench:1}/many:1 -o '$work/run/nexcage/'"
	# The store holds the bench image's base layer, flattened by the
	# nexcage build above: the shared image reads only its own layer.
	measure shared "'$bin' build -q --store '$work/run/store' --name shared --template-version 1 docker://${image%/bench:1}/shared:1 -o '$work/run/nexcage/'"
	measure cold "'$bin' build -q --store '$work/run/store-cold' --name shared --template-version 1 docker://${image%/bench:1}/shared:1 -o '$work/run/cold/'"
	measure factory "'$bin' build -q --jobs 2 --store '$work/run/store-factory' $factory -o '$work/run/factory/'"
	rm -rf "$work/run/store-factory" "$work/run/factory" "$work/run/store-cold" "$work/run/cold"
	measure big "'$bin' build -q --store '$work/run/store-big' --name big --template-version 1 docker://${image%/bench:1}/big:1 -o '$work/run/big/'"
	rm -rf "$work/run/store-big" "$work/run/big"
	measure bigfloor "for b in $bigblobs; do pigz -dc \$b; done | zstd -q -T0 -3 >/dev/null"
done

python3 - "$work/times" "$runs" "$(nproc)" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, wall, user, sys_, rss = line.split()
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss) / 1024))
med = {n: tuple(statistics.median(v[i] for v in rs) for i in range(3)) for n, rs in rows.items()}
spread = lambda n, i: (min(v[i] for v in rows[n]), max(v[i] for v in rows[n]))
print(f"medians of {sys.argv[2]} runs on {sys.argv[3]} cores (min-max)")
print(f"{'':10} {'wall s':>21} {'cpu s':>8} {'peak RSS MiB':>17}")
for n in ("nexcage", "hit", "anchor", "floor", "many", "shared", "cold", "factory", "big", "bigfloor"):
    w, c, m = med[n]
    (wl, wh), (ml, mh) = spread(n, 0), spread(n, 2)
    print(f"{n:10} {w:7.2f} ({wl:5.2f}-{wh:5.2f}) {c:8.2f} {m:7.0f} ({ml:4.0f}-{mh:4.0f})")
n, a, f = med["nexcage"], med["anchor"], med["floor"]
print(f"nexcage/anchor wall {n[0]/a[0]:.2f} (goal <= 0.35), cpu {n[1]/a[1]:.2f}")
print(f"nexcage/floor  wall {n[0]/f[0]:.2f} (goal <= 1.30)")
print(f"cache hit (up-to-date template) {med['hit'][0]:.2f} s (goal < 0.5)")
s, c, fa = med["shared"], med["cold"], med["factory"]
print(f"shared-base/cold wall {s[0]/c[0]:.2f} (goal <= 0.30)")
print(f"factory of 8 (--jobs 2)/8 cold wall {fa[0]/(8*c[0]):.2f} (goal <= 0.35)")
b, bf = med["big"], med["bigfloor"]
print(f"2 GB image/floor wall {b[0]/bf[0]:.2f}")
ours = ("nexcage", "hit", "many", "shared", "cold", "factory", "big")
print(f"peak RSS of any nexcage run {max(v[2] for k in ours for v in rows[k]):.0f} MiB (goal <= 150)")
EOF
