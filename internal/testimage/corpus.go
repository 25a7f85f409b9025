package testimage

import (
	"archive/tar"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Case is one image of the corpus.
type Case struct {
	Name        string        // short, usable as a tag and a file name: "whiteouts", "hardlink-lower", ...
	Image       v1.Image      // single-platform image, or nil when Index is set
	Index       v1.ImageIndex // multi-arch cases
	RootOnly    bool          // needs root to unpack exactly (device nodes, chown to other ids, security.* xattrs)
	Compression Compression   // what its layers use

	// About says what the case exercises, for test logs.
	About string
	// Expect lists what a correct unpack must produce; check with Verify.
	// Empty for Index cases (see About: the content differs per platform).
	Expect []Expect
	// SameDiffIDsAs names a Gzip OCI case whose layers are byte-identical
	// once decompressed, so both must unpack to the same tree. Set on the
	// cases the umoci CLI may not take directly (Docker media types, zstd),
	// so that the twin's unpack can serve as their oracle.
	SameDiffIDsAs string
}

// Expect is one fact about the root filesystem that a correct unpack of a
// Case produces. Zero-valued fields are not checked, so each Expect states
// only what its case is about.
type Expect struct {
	Path   string            // rootfs-relative, slash-separated, no leading "/" or "./"
	Absent bool              // Path must not exist, not even as a dangling symlink
	Type   byte              // tar.TypeReg, TypeDir, TypeSymlink, TypeChar, TypeBlock or TypeFifo
	Body   string            // exact content of a regular file
	Target string            // exact target of a symlink
	SameAs string            // another rootfs path that must be the same inode (hard link)
	Mode   int64             // permission bits plus setuid 04000, setgid 02000, sticky 01000
	Owner  string            // "uid:gid" on disk; only meaningful for unpacks done as root
	Dev    string            // "major:minor" of a device node
	Xattrs map[string]string // extended attributes that must be present with these values
}

// hostPlatform is the platform of every hand-made single-arch image.
var hostPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// pathEnv is the usual Docker default PATH; the hand-made images have no
// binaries, but converters still carry Env into the LXC config.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// baseEntries is the small tree most cases sit on, so their upper layers
// have something to delete, replace and link to.
func baseEntries() []Entry {
	return []Entry{
		Dir("bin/", 0o755),
		Dir("etc/", 0o755),
		File("etc/hostname", 0o644, "testimage\n"),
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
		File("etc/group", 0o644, "root:x:0:\n"),
		Dir("root/", 0o700),
		Dir("tmp/", 0o1777),
		Dir("usr/", 0o755),
		Dir("usr/bin/", 0o755),
		Dir("var/", 0o755),
	}
}

// spec is one row of the hand-made part of the corpus: layers stacked on
// baseEntries, and what the resulting rootfs must look like.
type spec struct {
	name     string
	about    string
	rootOnly bool
	layers   [][]Entry
	expect   []Expect
}

// Paths used by the longnames case. long120 is a single 120-byte component,
// which USTAR cannot split into prefix+name, so PAX is the only encoding;
// deepPath is over 255 bytes, past even USTAR's prefix+name total; name255 is
// a component exactly NAME_MAX long.
var (
	long120  = "longnames/" + strings.Repeat("a", 120)
	deepDirs = []string{
		"longnames/" + strings.Repeat("d", 60),
		"longnames/" + strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60),
		"longnames/" + strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/" + strings.Repeat("f", 60),
		"longnames/" + strings.Repeat("d", 60) + "/" + strings.Repeat("e", 60) + "/" + strings.Repeat("f", 60) + "/" + strings.Repeat("g", 60),
	}
	deepPath = deepDirs[3] + "/" + strings.Repeat("h", 60) + ".txt"
	name255  = "longnames/" + strings.Repeat("n", 255)
)

// capNetRawEP is the security.capability value `setcap cap_net_raw+ep`
// writes: CAP_NET_RAW is bit 13.
var capNetRawEP = CapV2(13)

// specs is the table of hand-made cases. Each layer list is applied on top
// of baseEntries; each expect list names the facts that only a correct
// unpacker gets right for that case.
func specs() []spec {
	return []spec{
		{
			name:  "whiteouts",
			about: "upper layer deletes a file, a directory tree, a base-layer file and a path that never existed; a later layer re-creates a deleted name",
			layers: [][]Entry{
				{
					Dir("wh/", 0o755),
					File("wh/keep", 0o644, "kept\n"),
					File("wh/gone-file", 0o644, "deleted by layer 2\n"),
					Dir("wh/gone-dir/", 0o755),
					File("wh/gone-dir/inner", 0o644, "deleted with its directory\n"),
					Dir("wh/gone-dir/sub/", 0o755),
					File("wh/gone-dir/sub/deep", 0o644, "deleted with its directory\n"),
					File("wh/reborn", 0o644, "layer 1 version\n"),
				},
				{
					Whiteout("wh/gone-file"),
					Whiteout("wh/gone-dir"),
					Whiteout("etc/hostname"),
					Whiteout("wh/never-existed"),
					Whiteout("wh/reborn"),
					File("wh/added", 0o644, "added by layer 2\n"),
				},
				{
					File("wh/reborn", 0o600, "layer 3 version\n"),
				},
			},
			expect: []Expect{
				{Path: "wh/keep", Type: tar.TypeReg, Body: "kept\n"},
				{Path: "wh/gone-file", Absent: true},
				{Path: "wh/gone-dir", Absent: true},
				{Path: "etc/hostname", Absent: true},
				{Path: "etc/passwd", Type: tar.TypeReg},
				{Path: "wh/added", Type: tar.TypeReg, Body: "added by layer 2\n"},
				{Path: "wh/reborn", Type: tar.TypeReg, Body: "layer 3 version\n", Mode: 0o600},
				// The markers themselves must never be materialised.
				{Path: "wh/.wh.gone-file", Absent: true},
				{Path: "wh/.wh.never-existed", Absent: true},
				{Path: "wh/never-existed", Absent: true},
			},
		},
		{
			name: "opaque",
			about: "opaque markers hide everything below in a directory but keep what the same layer adds, " +
				"whether the marker comes before (op/) or after (op-late/) the new entries",
			layers: [][]Entry{
				{
					Dir("op/", 0o755),
					File("op/old-a", 0o644, "hidden\n"),
					Dir("op/old-dir/", 0o755),
					File("op/old-dir/x", 0o644, "hidden\n"),
					Dir("op-late/", 0o755),
					File("op-late/old", 0o644, "hidden\n"),
					Dir("op-sibling/", 0o755),
					File("op-sibling/stays", 0o644, "not under the opaque dir\n"),
				},
				{
					Dir("op/", 0o750),
					OpaqueWhiteout("op"),
					File("op/new", 0o644, "added with the marker\n"),
					Dir("op/old-dir/", 0o755),
					File("op/old-dir/fresh", 0o644, "same dir name, new content\n"),
					// Same-layer entries before the marker must survive too:
					// whiteouts only ever apply to lower layers.
					Dir("op-late/", 0o755),
					File("op-late/new", 0o644, "written before the marker\n"),
					OpaqueWhiteout("op-late"),
				},
			},
			expect: []Expect{
				{Path: "op", Type: tar.TypeDir, Mode: 0o750},
				{Path: "op/old-a", Absent: true},
				{Path: "op/old-dir/x", Absent: true},
				{Path: "op/old-dir/fresh", Type: tar.TypeReg, Body: "same dir name, new content\n"},
				{Path: "op/new", Type: tar.TypeReg, Body: "added with the marker\n"},
				{Path: "op/.wh..wh..opq", Absent: true},
				{Path: "op-late/old", Absent: true},
				{Path: "op-late/new", Type: tar.TypeReg, Body: "written before the marker\n"},
				{Path: "op-late/.wh..wh..opq", Absent: true},
				{Path: "op-sibling/stays", Type: tar.TypeReg, Body: "not under the opaque dir\n"},
			},
		},
		{
			name: "whiteouts-repeated",
			about: "whiteouts repeated in one layer, nested under an opaque one, and before and after the entries they must spare: " +
				"an unpacker may skip one only when it has nothing left to do",
			layers: [][]Entry{
				{
					Dir("rw/", 0o755),
					File("rw/a", 0o644, "lower\n"),
					Dir("rw/sub/", 0o755),
					File("rw/sub/b", 0o644, "lower\n"),
					Dir("rw/sub/deep/", 0o755),
					File("rw/sub/deep/c", 0o644, "lower\n"),
					Dir("rw/gone/", 0o755),
					File("rw/gone/x", 0o644, "lower\n"),
					File("rw/file", 0o644, "lower\n"),
					Dir("ox/", 0o755),
					File("ox/y", 0o644, "lower\n"),
				},
				{
					OpaqueWhiteout("rw/sub"),
					File("rw/sub/new1", 0o644, "upper\n"),
					OpaqueWhiteout("rw/sub"),
					OpaqueWhiteout("rw/sub/deep"),
					File("rw/sub/deep/d", 0o644, "upper\n"),
					OpaqueWhiteout("rw/sub/deep"),
					OpaqueWhiteout("rw"),
					Whiteout("rw/sub"),
					Whiteout("rw/file"),
					File("rw/file", 0o600, "upper\n"),
					Whiteout("rw/file"),
					// An opaque whiteout keeps the directory; a plain one
					// after it must still delete it.
					OpaqueWhiteout("ox"),
					Whiteout("ox"),
					OpaqueWhiteout("ox"),
				},
			},
			expect: []Expect{
				{Path: "rw/sub/new1", Type: tar.TypeReg, Body: "upper\n"},
				{Path: "rw/sub/deep/d", Type: tar.TypeReg, Body: "upper\n"},
				{Path: "rw/sub/b", Absent: true},
				{Path: "rw/sub/deep/c", Absent: true},
				{Path: "rw/a", Absent: true},
				{Path: "rw/gone", Absent: true},
				{Path: "rw/file", Type: tar.TypeReg, Body: "upper\n", Mode: 0o600},
				{Path: "ox", Absent: true},
			},
		},
		{
			name: "type-changes",
			about: "an upper entry of another type replaces the lower one with no whiteout: file->dir, dir->file, " +
				"symlink->file, file->symlink, dir->symlink, and symlink->dir (which must not write through the old link)",
			layers: [][]Entry{
				{
					Dir("tc/", 0o755),
					File("tc/target", 0o644, "symlink target\n"),
					Dir("tc/somedir/", 0o755),
					File("tc/file2dir", 0o644, "was a file\n"),
					Dir("tc/dir2file/", 0o755),
					File("tc/dir2file/child", 0o644, "must vanish with its dir\n"),
					Symlink("tc/link2file", "target"),
					File("tc/file2link", 0o644, "was a file\n"),
					Dir("tc/dir2link/", 0o755),
					File("tc/dir2link/child", 0o644, "must vanish with its dir\n"),
					Symlink("tc/link2dir", "somedir"),
				},
				{
					Dir("tc/file2dir/", 0o755),
					File("tc/file2dir/inner", 0o644, "now a directory\n"),
					File("tc/dir2file", 0o644, "now a file\n"),
					File("tc/link2file", 0o644, "now a file\n"),
					Symlink("tc/file2link", "target"),
					Symlink("tc/dir2link", "target"),
					Dir("tc/link2dir/", 0o755),
					File("tc/link2dir/inner", 0o644, "inside the new directory\n"),
				},
			},
			expect: []Expect{
				{Path: "tc/file2dir", Type: tar.TypeDir},
				{Path: "tc/file2dir/inner", Type: tar.TypeReg, Body: "now a directory\n"},
				{Path: "tc/dir2file", Type: tar.TypeReg, Body: "now a file\n"},
				{Path: "tc/dir2file/child", Absent: true},
				{Path: "tc/link2file", Type: tar.TypeReg, Body: "now a file\n"},
				{Path: "tc/target", Type: tar.TypeReg, Body: "symlink target\n"},
				{Path: "tc/file2link", Type: tar.TypeSymlink, Target: "target"},
				{Path: "tc/dir2link", Type: tar.TypeSymlink, Target: "target"},
				{Path: "tc/link2dir", Type: tar.TypeDir},
				{Path: "tc/link2dir/inner", Type: tar.TypeReg, Body: "inside the new directory\n"},
				{Path: "tc/somedir/inner", Absent: true},
			},
		},
		{
			name: "large-files",
			about: "files around the 1 MiB from which a zstd template gives a file frames of its own, one spanning two 4 MiB frames and hard-linked, " +
				"an upper layer replacing one and deleting another, with small files between them",
			layers: [][]Entry{
				{
					Dir("big/", 0o755),
					File("big/a-small", 0o644, "before the large files\n"),
					File("big/frames", 0o644, largeBody(1, 4<<20+5)),
					File("big/just-below", 0o644, largeBody(2, 1<<20-1)),
					File("big/m-small", 0o644, "between the large files\n"),
					File("big/just-at", 0o755, largeBody(3, 1<<20)),
					File("big/replaced", 0o644, largeBody(4, 2<<20)),
					File("big/deleted", 0o644, largeBody(5, 1<<20+7)),
					Hardlink("big/z-link", "big/frames"),
				},
				{
					File("big/replaced", 0o600, largeBody(6, 3<<19)),
					Whiteout("big/deleted"),
				},
			},
			expect: []Expect{
				{Path: "big/frames", Type: tar.TypeReg, Body: largeBody(1, 4<<20+5)},
				{Path: "big/z-link", Type: tar.TypeReg, SameAs: "big/frames"},
				{Path: "big/just-below", Type: tar.TypeReg, Body: largeBody(2, 1<<20-1)},
				{Path: "big/just-at", Type: tar.TypeReg, Body: largeBody(3, 1<<20), Mode: 0o755},
				{Path: "big/replaced", Type: tar.TypeReg, Body: largeBody(6, 3<<19), Mode: 0o600},
				{Path: "big/deleted", Absent: true},
			},
		},
		{
			name:  "hardlink-lower",
			about: "upper layer hard-links to a file from a lower layer; a three-member hard link group within one layer, one member in a subdirectory",
			layers: [][]Entry{
				{
					Dir("hl/", 0o755),
					File("hl/lower-file", 0o644, "from the lower layer\n"),
				},
				{
					Hardlink("hl/link-to-lower", "hl/lower-file"),
					File("hl/group-a", 0o640, "shared by three names\n"),
					Hardlink("hl/group-b", "hl/group-a"),
					Dir("hl/sub/", 0o755),
					Hardlink("hl/sub/group-c", "hl/group-a"),
				},
			},
			expect: []Expect{
				{Path: "hl/link-to-lower", Type: tar.TypeReg, Body: "from the lower layer\n", SameAs: "hl/lower-file"},
				{Path: "hl/group-a", Type: tar.TypeReg, Body: "shared by three names\n", Mode: 0o640},
				{Path: "hl/group-b", Type: tar.TypeReg, SameAs: "hl/group-a"},
				{Path: "hl/sub/group-c", Type: tar.TypeReg, SameAs: "hl/group-a"},
			},
		},
		{
			name: "hardlink-symlink",
			about: "hard links to symlinks (one inode, nlink 2, as buildah and podman layers have them): within a layer, one whose name " +
				"sorts before its target's (so the template's first member of the group is the link's name), and one in an upper layer to a lower layer's symlink",
			layers: [][]Entry{
				{
					Dir("srv/", 0o755),
					Dir("srv/hl/", 0o755),
					File("srv/hl/target", 0o644, "what the symlinks point at\n"),
					Symlink("srv/hl/hardlink-to-symlink", "target"),
					Hardlink("srv/hl/rel-link", "srv/hl/hardlink-to-symlink"),
					Symlink("srv/hl/zz-abs", "/srv/hl/target"),
					Hardlink("srv/hl/aa-first", "srv/hl/zz-abs"),
				},
				{
					Dir("srv/upper/", 0o755),
					Hardlink("srv/upper/to-lower-symlink", "srv/hl/hardlink-to-symlink"),
				},
			},
			expect: []Expect{
				{Path: "srv/hl/hardlink-to-symlink", Type: tar.TypeSymlink, Target: "target"},
				{Path: "srv/hl/rel-link", Type: tar.TypeSymlink, Target: "target", SameAs: "srv/hl/hardlink-to-symlink"},
				{Path: "srv/hl/aa-first", Type: tar.TypeSymlink, Target: "/srv/hl/target", SameAs: "srv/hl/zz-abs"},
				{Path: "srv/upper/to-lower-symlink", Type: tar.TypeSymlink, Target: "target", SameAs: "srv/hl/hardlink-to-symlink"},
			},
		},
		{
			name:     "devices",
			about:    "character device 1:3 (like /dev/null), block device 7:0 (like /dev/loop0) and a fifo",
			rootOnly: true,
			layers: [][]Entry{{
				Dir("devices/", 0o755),
				CharDev("devices/null", 0o666, 1, 3),
				BlockDev("devices/loop0", 0o660, 7, 0),
				Fifo("devices/fifo", 0o620),
			}},
			expect: []Expect{
				{Path: "devices/null", Type: tar.TypeChar, Dev: "1:3", Mode: 0o666},
				{Path: "devices/loop0", Type: tar.TypeBlock, Dev: "7:0", Mode: 0o660},
				{Path: "devices/fifo", Type: tar.TypeFifo, Mode: 0o620},
			},
		},
		{
			name:  "modes",
			about: "setuid, setgid and sticky bits on files and directories, and modes a umask would alter (0600, 0711, 0444, 0777)",
			layers: [][]Entry{{
				Dir("modes/", 0o755),
				File("modes/setuid", 0o4755, "#!/bin/sh\n"),
				File("modes/setgid", 0o2755, "#!/bin/sh\n"),
				File("modes/setuid-setgid", 0o6711, "#!/bin/sh\n"),
				File("modes/private", 0o600, "secret\n"),
				File("modes/exec-only", 0o711, "#!/bin/sh\n"),
				File("modes/read-only", 0o444, "ro\n"),
				File("modes/world-writable", 0o777, "ww\n"),
				Dir("modes/sticky/", 0o1777),
				Dir("modes/setgid-dir/", 0o2775),
				Dir("modes/traverse-only/", 0o711),
				File("modes/traverse-only/inside", 0o644, "reachable by name only\n"),
			}},
			expect: []Expect{
				{Path: "modes/setuid", Type: tar.TypeReg, Mode: 0o4755},
				{Path: "modes/setgid", Type: tar.TypeReg, Mode: 0o2755},
				{Path: "modes/setuid-setgid", Type: tar.TypeReg, Mode: 0o6711},
				{Path: "modes/private", Type: tar.TypeReg, Mode: 0o600},
				{Path: "modes/exec-only", Type: tar.TypeReg, Mode: 0o711},
				{Path: "modes/read-only", Type: tar.TypeReg, Mode: 0o444, Body: "ro\n"},
				{Path: "modes/world-writable", Type: tar.TypeReg, Mode: 0o777},
				{Path: "modes/sticky", Type: tar.TypeDir, Mode: 0o1777},
				{Path: "modes/setgid-dir", Type: tar.TypeDir, Mode: 0o2775},
				{Path: "modes/traverse-only", Type: tar.TypeDir, Mode: 0o711},
				{Path: "modes/traverse-only/inside", Type: tar.TypeReg, Body: "reachable by name only\n"},
			},
		},
		{
			name:     "xattrs",
			about:    "user.* xattrs on a file and a directory, and a real security.capability (cap_net_raw+ep) that only root may set",
			rootOnly: true,
			layers: [][]Entry{{
				Dir("xattrs/", 0o755).Xattr("user.dir", "on a directory"),
				File("xattrs/user", 0o644, "has user xattrs\n").Xattr("user.foo", "bar").Xattr("user.empty-ish", "x"),
				File("xattrs/ping", 0o755, "pretend ping\n").Xattr("security.capability", capNetRawEP),
			}},
			expect: []Expect{
				{Path: "xattrs", Type: tar.TypeDir, Xattrs: map[string]string{"user.dir": "on a directory"}},
				{Path: "xattrs/user", Type: tar.TypeReg, Xattrs: map[string]string{"user.foo": "bar", "user.empty-ish": "x"}},
				{Path: "xattrs/ping", Type: tar.TypeReg, Mode: 0o755, Xattrs: map[string]string{"security.capability": capNetRawEP}},
			},
		},
		{
			name: "ids",
			about: "files, a directory and a symlink owned by 1000, 65534 (nobody) and ids above 65535 " +
				"(100000, 70000:70001), which an unprivileged LXC id map cannot represent",
			rootOnly: true,
			layers: [][]Entry{{
				Dir("ids/", 0o755),
				File("ids/uid1000", 0o644, "1000\n").Owner(1000, 1000),
				File("ids/nobody", 0o644, "65534\n").Owner(65534, 65534),
				File("ids/uid100000", 0o644, "100000\n").Owner(100000, 100000),
				File("ids/uid70000-gid70001", 0o644, "70000:70001\n").Owner(70000, 70001),
				Dir("ids/dir1000/", 0o750).Owner(1000, 1000),
				Symlink("ids/link1000", "uid1000").Owner(1000, 1000),
			}},
			expect: []Expect{
				{Path: "ids/uid1000", Owner: "1000:1000"},
				{Path: "ids/nobody", Owner: "65534:65534"},
				{Path: "ids/uid100000", Owner: "100000:100000"},
				{Path: "ids/uid70000-gid70001", Owner: "70000:70001"},
				{Path: "ids/dir1000", Type: tar.TypeDir, Owner: "1000:1000", Mode: 0o750},
				{Path: "ids/link1000", Type: tar.TypeSymlink, Owner: "1000:1000", Target: "uid1000"},
			},
		},
		{
			name: "longnames",
			about: "PAX-only names: a 120-byte component, a path over 255 bytes, a 255-byte component, " +
				"a symlink target and a hard link target over 100 bytes, UTF-8 names and names with spaces",
			layers: [][]Entry{{
				Dir("longnames/", 0o755),
				File(long120, 0o644, "120-byte name\n"),
				Dir(deepDirs[0], 0o755),
				Dir(deepDirs[1], 0o755),
				Dir(deepDirs[2], 0o755),
				Dir(deepDirs[3], 0o755),
				File(deepPath, 0o644, "deep\n"),
				File(name255, 0o644, "NAME_MAX\n"),
				Symlink("longnames/long-target", strings.TrimPrefix(long120, "longnames/")),
				Hardlink("longnames/hard-to-long", long120),
				Dir("café/", 0o755),
				File("café/日本語.txt", 0o644, "konnichiwa\n"),
				Dir("with space/", 0o755),
				File("with space/file name.txt", 0o644, "spaces\n"),
			}},
			expect: []Expect{
				{Path: long120, Type: tar.TypeReg, Body: "120-byte name\n"},
				{Path: deepPath, Type: tar.TypeReg, Body: "deep\n"},
				{Path: name255, Type: tar.TypeReg, Body: "NAME_MAX\n"},
				{Path: "longnames/long-target", Type: tar.TypeSymlink, Target: strings.TrimPrefix(long120, "longnames/")},
				{Path: "longnames/hard-to-long", Type: tar.TypeReg, SameAs: long120},
				{Path: "café/日本語.txt", Type: tar.TypeReg, Body: "konnichiwa\n"},
				{Path: "with space/file name.txt", Type: tar.TypeReg, Body: "spaces\n"},
			},
		},
		{
			name:  "duplicate",
			about: "the same file and the same directory twice in one layer with different content and modes; the last entry wins",
			layers: [][]Entry{{
				Dir("dup/", 0o755),
				File("dup/file", 0o644, "first, must be replaced\n"),
				Dir("dup/dir/", 0o700),
				File("dup/file", 0o600, "second, wins\n"),
				Dir("dup/dir/", 0o755),
			}},
			expect: []Expect{
				{Path: "dup/file", Type: tar.TypeReg, Body: "second, wins\n", Mode: 0o600},
				{Path: "dup/dir", Type: tar.TypeDir, Mode: 0o755},
			},
		},
		{
			name: "no-parents",
			about: "entries whose parent directories have no entries of their own, " +
				"and one implied directory that gets an explicit 0700 entry later",
			layers: [][]Entry{{
				File("noparents/a/b/c/file", 0o644, "parents implied\n"),
				Symlink("noparents/x/y/link", "../../a/b/c/file"),
				File("noparents/late/inner/file", 0o644, "parent mode set afterwards\n"),
				Dir("noparents/late/", 0o700),
			}},
			expect: []Expect{
				{Path: "noparents/a/b/c/file", Type: tar.TypeReg, Body: "parents implied\n"},
				{Path: "noparents/a/b", Type: tar.TypeDir},
				{Path: "noparents/x/y/link", Type: tar.TypeSymlink, Target: "../../a/b/c/file"},
				{Path: "noparents/late", Type: tar.TypeDir, Mode: 0o700},
				{Path: "noparents/late/inner/file", Type: tar.TypeReg, Body: "parent mode set afterwards\n"},
			},
		},
		{
			name:  "dot-prefixed",
			about: "every name ./-prefixed as `tar -C dir .` writes them, including ./ itself and a hard link target",
			layers: [][]Entry{{
				Dir("./", 0o755),
				Dir("./dot/", 0o755),
				File("./dot/file", 0o644, "dot file\n"),
				Symlink("./dot/link", "file"),
				Hardlink("./dot/hard", "./dot/file"),
				Dir("./dot/sub/", 0o755),
				File("./dot/sub/x", 0o644, "nested\n"),
			}},
			expect: []Expect{
				{Path: "dot/file", Type: tar.TypeReg, Body: "dot file\n"},
				{Path: "dot/link", Type: tar.TypeSymlink, Target: "file"},
				{Path: "dot/hard", Type: tar.TypeReg, SameAs: "dot/file"},
				{Path: "dot/sub/x", Type: tar.TypeReg, Body: "nested\n"},
			},
		},
		{
			name:  "symlinks",
			about: "relative, absolute, dangling, self-looping and chained symlinks, and symlinks to directories, kept verbatim (absolute targets not rewritten)",
			layers: [][]Entry{{
				Dir("sl/", 0o755),
				Symlink("sl/relative", "../etc/hostname"),
				Symlink("sl/absolute", "/etc/hostname"),
				Symlink("sl/dangling", "does/not/exist"),
				Symlink("sl/dir-relative", "../etc"),
				Symlink("sl/dir-absolute", "/usr/bin"),
				Symlink("sl/chain", "relative"),
				Symlink("sl/loop", "loop"),
			}},
			expect: []Expect{
				{Path: "sl/relative", Type: tar.TypeSymlink, Target: "../etc/hostname"},
				{Path: "sl/absolute", Type: tar.TypeSymlink, Target: "/etc/hostname"},
				{Path: "sl/dangling", Type: tar.TypeSymlink, Target: "does/not/exist"},
				{Path: "sl/dir-relative", Type: tar.TypeSymlink, Target: "../etc"},
				{Path: "sl/dir-absolute", Type: tar.TypeSymlink, Target: "/usr/bin"},
				{Path: "sl/chain", Type: tar.TypeSymlink, Target: "relative"},
				{Path: "sl/loop", Type: tar.TypeSymlink, Target: "loop"},
			},
		},
	}
}

// Corpus returns every case. The Gzip cases are meant to be compared against
// the `umoci unpack` CLI. umoci refuses Docker media types (manifest, config
// and layer alike) and, before 0.5, zstd layers, so docker-v2s2, zstd and
// uncompressed name a Gzip twin in SameDiffIDsAs whose unpack is their
// oracle instead. multiarch is an Index: pick a manifest before unpacking.
func Corpus() ([]Case, error) {
	var cases []Case
	byName := map[string]spec{}
	for _, s := range specs() {
		byName[s.name] = s
		img, err := stackedImage(s.layers, Gzip, caseConfig(s.name), false)
		if err != nil {
			return nil, fmt.Errorf("testimage: case %s: %w", s.name, err)
		}
		cases = append(cases, Case{
			Name: s.name, Image: img, RootOnly: s.rootOnly, Compression: Gzip,
			About: s.about, Expect: s.expect,
		})
	}

	// The same tars as "whiteouts" (several layers, deletions across them)
	// in each other blob format, so a wrong decompressor or media-type
	// switch shows up as a different tree than the Gzip twin's.
	wh := byName["whiteouts"]
	for _, v := range []struct {
		name   string
		comp   Compression
		docker bool
		about  string
	}{
		{"docker-v2s2", DockerGzip, true, "Docker schema 2 manifest, Docker config and rootfs.diff.tar.gzip layers"},
		{"zstd", Zstd, false, "OCI layers compressed with zstd (tar+zstd)"},
		{"uncompressed", Uncompressed, false, "OCI layers stored as plain tar (digest == diff ID)"},
	} {
		img, err := stackedImage(wh.layers, v.comp, caseConfig(v.name), v.docker)
		if err != nil {
			return nil, fmt.Errorf("testimage: case %s: %w", v.name, err)
		}
		cases = append(cases, Case{
			Name: v.name, Image: img, Compression: v.comp,
			About: v.about + "; same layer content as whiteouts", Expect: wh.expect,
			SameDiffIDsAs: "whiteouts",
		})
	}

	runs, err := runsCase()
	if err != nil {
		return nil, err
	}
	cases = append(cases, runs)

	multi, err := multiarch()
	if err != nil {
		return nil, err
	}
	cases = append(cases, Case{
		Name: "multiarch", Index: multi, Compression: Gzip,
		About: "OCI index of linux/amd64 and linux/arm64/v8 images whose /etc/arch reads \"amd64\\n\" and \"arm64\\n\"",
	})

	alpineCases, err := alpineCorpus()
	if err != nil {
		return nil, err
	}
	return append(cases, alpineCases...), nil
}

// stackedImage builds baseEntries plus layers, all with compression c.
func stackedImage(layers [][]Entry, c Compression, cfg v1.Config, docker bool) (v1.Image, error) {
	return layersImage(append([][]Entry{baseEntries()}, layers...), c, cfg, docker)
}

// Layers builds a linux/amd64 OCI image of cfg whose layers (bottom
// first) hold these entries, each compressed with c: a test's own image,
// not a corpus case.
func Layers(cfg v1.Config, c Compression, layers ...[]Entry) (v1.Image, error) {
	return layersImage(layers, c, cfg, false)
}

func layersImage(layers [][]Entry, c Compression, cfg v1.Config, docker bool) (v1.Image, error) {
	ls := make([]v1.Layer, len(layers))
	for i, entries := range layers {
		l, err := Layer(entries, c)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		ls[i] = l
	}
	return Image(ls, cfg, hostPlatform, docker)
}

// caseConfig labels each image with its case name so an image found in a
// store or template can be traced back to the corpus row that made it.
func caseConfig(name string) v1.Config {
	return v1.Config{
		Env:    []string{pathEnv},
		Labels: map[string]string{"org.nexcage.testimage.case": name},
	}
}

func multiarch() (v1.ImageIndex, error) {
	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
	}
	images := make([]v1.Image, len(platforms))
	for i, p := range platforms {
		base, err := Layer(baseEntries(), Gzip)
		if err != nil {
			return nil, err
		}
		arch, err := Layer([]Entry{File("etc/arch", 0o644, p.Architecture+"\n")}, Gzip)
		if err != nil {
			return nil, err
		}
		images[i], err = Image([]v1.Layer{base, arch}, caseConfig("multiarch"), p, false)
		if err != nil {
			return nil, fmt.Errorf("testimage: multiarch %s: %w", p, err)
		}
	}
	return imageIndex(images, platforms), nil
}

// runsCase is a lowest layer as image builders write them: the root
// first, every member in archive order, thousands of small files with a
// large one, links and symlinks among them, so that a zstd template has
// many cuts between runs (see internal/zframe). An upper layer touches a
// few places: the runs there must be compressed again, the others reused.
func runsCase() (Case, error) {
	lower := []Entry{Dir("./", 0o755)}
	lower = append(lower, baseEntries()[:5]...) // bin/ and etc/, before the d* directories
	var expect []Expect
	for d := range 40 {
		dir := fmt.Sprintf("d%02d/", d)
		lower = append(lower, Dir(dir, 0o755))
		for f := range 80 {
			name := fmt.Sprintf("%sf%02d", dir, f)
			switch {
			case d == 20 && f == 40:
				lower = append(lower, File(name, 0o644, largeBody(d, 1<<20+3)))
			case f == 70:
				lower = append(lower, Hardlink(name, dir+"f01"))
			case f == 75:
				lower = append(lower, Symlink(name, "f02"))
			default:
				e := File(name, 0o644, largeBody(d*100+f, 100+(d*131+f*977)%6000))
				e.Hdr.ModTime = runsMtime // for a clamp to change
				lower = append(lower, e)
			}
		}
	}
	// A /dev, which a template must have: the writer adds none.
	lower = append(lower, Dir("dev/", 0o755))
	lower = append(lower, baseEntries()[5:]...)
	// Archive order: bytewise, '/' before any other byte.
	key := func(e Entry) string { return strings.ReplaceAll(strings.TrimSuffix(e.Hdr.Name, "/"), "/", "\x00") }
	slices.SortStableFunc(lower[1:], func(a, b Entry) int { return strings.Compare(key(a), key(b)) })
	sameHeader := File("d18/f06", 0o644, strings.Repeat("y", 100+(18*131+6*977)%6000))
	sameHeader.Hdr.ModTime = runsMtime
	// Every change but one falls between the same two cuts (d02/f79 and
	// d15/f17, see zframe.CutBefore), so the runs elsewhere hold. The
	// other, alone between d17/f46 and d20/f40, changes only a content.
	upper := []Entry{
		Dir("d10/", 0o750), // new metadata for a directory
		File("d10/f05", 0o600, "replaced by the upper layer\n"),
		Dir("d11/new/", 0o755),
		File("d11/new/added", 0o644, "added by the upper layer\n"),
		Whiteout("d12/f10"),
		Hardlink("d13/link-to-lower", "d13/f03"),
		sameHeader,
	}
	img, err := Image([]v1.Layer{mustLayer(lower), mustLayer(upper)}, caseConfig("runs"), hostPlatform, false)
	if err != nil {
		return Case{}, fmt.Errorf("testimage: case runs: %w", err)
	}
	expect = append(expect,
		Expect{Path: "d10", Type: tar.TypeDir, Mode: 0o750},
		Expect{Path: "d10/f05", Type: tar.TypeReg, Body: "replaced by the upper layer\n", Mode: 0o600},
		Expect{Path: "d18/f06", Type: tar.TypeReg, Body: string(sameHeader.Body)},
		Expect{Path: "d11/new/added", Type: tar.TypeReg, Body: "added by the upper layer\n"},
		Expect{Path: "d12/f10", Absent: true},
		Expect{Path: "d13/link-to-lower", Type: tar.TypeReg, SameAs: "d13/f03"},
		Expect{Path: "d07/f70", Type: tar.TypeReg, SameAs: "d07/f01"},
		Expect{Path: "d20/f40", Type: tar.TypeReg, Body: largeBody(20, 1<<20+3)},
		Expect{Path: "d39/f79", Type: tar.TypeReg, Body: largeBody(3979, 100+(39*131+79*977)%6000)},
	)
	return Case{
		Name: "runs", Image: img, Compression: Gzip, Expect: expect,
		About: "a lowest layer of 3,200 files in archive order, root first, with hard links, symlinks and a large file; an upper layer changing a directory's mode, replacing, adding and deleting files",
	}, nil
}

// runsMtime is the mtime of most of runsCase's files: 2023-11-14.
var runsMtime = time.Unix(1700000000, 0)

func mustLayer(entries []Entry) v1.Layer {
	l, err := Layer(entries, Gzip)
	if err != nil {
		panic(err)
	}
	return l
}

// largeBody is n bytes of compressible text that differs with seed.
func largeBody(seed, n int) string {
	var b strings.Builder
	b.Grow(n + 64)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d line %d of a large file %x\n", seed, i, (i*2654435761+seed)%1000003)
	}
	return b.String()[:n]
}
