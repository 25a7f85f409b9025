package tartree_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/tartree"
)

var mtime = time.Unix(1700000000, 0).UTC()

func file(body string) *tartree.Node {
	return &tartree.Node{Type: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mtime,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }}
}

func dir() *tartree.Node { return &tartree.Node{Type: tar.TypeDir, Mode: 0o755, ModTime: mtime} }

func symlink(target string) *tartree.Node {
	return &tartree.Node{Type: tar.TypeSymlink, Mode: 0o777, ModTime: mtime, Linkname: target}
}

// names lists the member names of t in Walk order.
func names(t *tartree.Tree) []string {
	var out []string
	t.Walk(func(p string, n *tartree.Node) error {
		out = append(out, tartree.MemberName(p, n))
		return nil
	})
	return out
}

// written serialises t as a template archive and reads it back.
func written(t *testing.T, tree *tartree.Tree) []*tar.Header {
	t.Helper()
	var buf bytes.Buffer
	if err := convert.WriteTar(context.Background(), &buf, tree, time.Time{}); err != nil {
		t.Fatal(err)
	}
	var hdrs []*tar.Header
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
	}
}

// TestCanonicalOrder pins the member order every template source shares
// (GNU tar's --sort=name): "./" first, depth first, each directory's
// entries sorted bytewise by name, so a directory's contents come right
// after it, before siblings whose names extend its name ("a/z" before
// "a b", "a-b" and "a.b", which a sort of full paths puts first since ' ',
// '-' and '.' sort before '/'), and non-ASCII names after ASCII ones.
func TestCanonicalOrder(t *testing.T) {
	tree := tartree.New()
	for _, p := range []string{"é", "a.b", "a/z", "B", "a-b", "a/_", "a/Z", "_", "a b"} {
		tree.Put(p, file(p))
	}
	tree.Put("a", dir())
	want := []string{"./", "./B", "./_", "./a/", "./a/Z", "./a/_", "./a/z", "./a b", "./a-b", "./a.b", "./é"}
	if got := names(tree); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("walk order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var got []string
	for _, h := range written(t, tree) {
		got = append(got, h.Name)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("archive order:\n%s\nwant the walk's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWalkPaths checks the paths Walk passes ("." then slash paths without
// "./") and that an error stops the walk and is returned.
func TestWalkPaths(t *testing.T) {
	tree := tartree.New()
	tree.Put("etc/os-release", file("x"))
	tree.Put("bin", dir())
	var paths []string
	stop := errors.New("stop")
	err := tree.Walk(func(p string, n *tartree.Node) error {
		paths = append(paths, p)
		if p == "etc" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Walk returned %v, want the callback's error", err)
	}
	if got := strings.Join(paths, " "); got != ". bin etc" {
		t.Fatalf("paths = %q, want %q (stopped at etc)", got, ". bin etc")
	}
}

func TestPut(t *testing.T) {
	t.Run("missing parents are root-owned 0755 directories", func(t *testing.T) {
		tree := tartree.New()
		n := file("x")
		n.UID, n.GID = 1000, 1000
		tree.Put("./usr/lib/x", n)
		for _, p := range []string{"usr", "usr/lib"} {
			d := tree.Get(p)
			if d == nil || d.Type != tar.TypeDir || d.Mode != 0o755 || d.UID != 0 || d.GID != 0 || !d.ModTime.Equal(mtime) {
				t.Fatalf("%s = %+v, want a root-owned 0755 directory with the child's mtime", p, d)
			}
		}
		if tree.Get("usr/lib/x") != n {
			t.Fatal("the node put is not at its path")
		}
	})
	t.Run("a directory over a directory keeps its entries", func(t *testing.T) {
		tree := tartree.New()
		tree.Put("etc/passwd", file("root"))
		tree.Put("etc", &tartree.Node{Type: tar.TypeDir, Mode: 0o700})
		if tree.Get("etc").Mode != 0o700 || tree.Get("etc/passwd") == nil {
			t.Fatalf("etc = %+v, passwd = %v: want the new metadata and the old entries", tree.Get("etc"), tree.Get("etc/passwd"))
		}
	})
	t.Run("a file over a directory drops its entries", func(t *testing.T) {
		tree := tartree.New()
		tree.Put("etc/passwd", file("root"))
		tree.Put("etc", file("now a file"))
		if tree.Get("etc/passwd") != nil {
			t.Fatal("etc/passwd survived etc becoming a file")
		}
		if got := names(tree); strings.Join(got, " ") != "./ ./etc" {
			t.Fatalf("members %v", got)
		}
	})
	t.Run("a path through a file replaces the file with a directory", func(t *testing.T) {
		tree := tartree.New()
		tree.Put("etc", file("x"))
		tree.Put("etc/passwd", file("root"))
		if n := tree.Get("etc"); n == nil || n.Type != tar.TypeDir {
			t.Fatalf("etc = %+v, want a directory", n)
		}
	})
	t.Run("the root replaced keeps its entries", func(t *testing.T) {
		tree := tartree.New()
		tree.Put("bin/sh", file("sh"))
		root := dir()
		root.Mode = 0o700
		tree.Put(".", root)
		if tree.Root != root || tree.Get("bin/sh") == nil {
			t.Fatal("the new root lost the tree's entries")
		}
	})
}

func TestGetRemove(t *testing.T) {
	tree := tartree.New()
	tree.Put("usr/bin/sh", file("sh"))
	tree.Put("bin", symlink("usr/bin"))
	if tree.Get("bin/sh") != nil {
		t.Fatal("Get followed a symlink")
	}
	if n := tree.Get("/usr/../usr/bin/./sh"); n == nil || n.Type != tar.TypeReg {
		t.Fatal("Get did not clean its path")
	}
	tree.Remove("usr/bin")
	if tree.Get("usr/bin/sh") != nil || tree.Get("usr/bin") != nil || tree.Get("usr") == nil {
		t.Fatal("Remove did not take the subtree, and only it")
	}
	tree.Remove("usr/bin/sh/x") // below a missing path: nothing to do
	tree.Remove("bin/x")        // through a symlink: nothing to do
	if tree.Get("bin") == nil {
		t.Fatal("Remove through a symlink removed the symlink")
	}
}

// TestResolve checks symlinks are followed as the container sees them:
// absolute targets from the rootfs, ".." clamped at the root.
func TestResolve(t *testing.T) {
	tree := tartree.New()
	tree.Put("usr/bin/sh", file("#!"))
	tree.Put("bin", symlink("usr/bin"))
	tree.Put("abs", symlink("/usr/bin/sh"))
	tree.Put("climb", symlink("../../../../usr/bin/sh"))
	tree.Put("loop", symlink("loop"))
	tree.Put("dangling", symlink("nowhere"))
	for _, tc := range []struct{ path, want string }{
		{"bin/sh", "usr/bin/sh"},
		{"abs", "usr/bin/sh"},
		{"climb", "usr/bin/sh"},
		{"loop", ""},
		{"dangling", ""},
	} {
		n, rp := tree.Resolve(tc.path)
		if rp != tc.want || (tc.want != "") != (n != nil) {
			t.Errorf("Resolve(%q) = %v, %q, want %q", tc.path, n, rp, tc.want)
		}
	}
	b, err := tree.ReadFile("climb", 100)
	if err != nil || string(b) != "#!" {
		t.Fatalf("ReadFile through a climbing symlink = %q, %v", b, err)
	}
	if b, err := tree.ReadFile("usr/bin/sh", 1); err != nil || string(b) != "#" {
		t.Fatalf("ReadFile with limit 1 = %q, %v, want the first byte", b, err)
	}
	if _, err := tree.ReadFile("usr/bin", 100); err == nil {
		t.Fatal("ReadFile of a directory succeeded")
	}
}

// TestHeader pins what a member header holds: PAX, numeric owners, the
// clamp, xattrs as SCHILY.xattr records, a size only for regular files,
// and a hard link carrying its group's metadata but no content.
func TestHeader(t *testing.T) {
	n := file("hello")
	n.UID, n.GID, n.Mode = 7, 8, 0o4755
	n.ModTime = mtime.Add(time.Hour)
	n.Xattrs = map[string]string{"user.a": "1"}
	h := tartree.Header("usr/bin/x", n, mtime, "")
	if h.Name != "./usr/bin/x" || h.Typeflag != tar.TypeReg || h.Size != 5 || h.Uid != 7 || h.Gid != 8 ||
		h.Mode != 0o4755 || !h.ModTime.Equal(mtime) || h.Format != tar.FormatPAX || h.PAXRecords["SCHILY.xattr.user.a"] != "1" {
		t.Fatalf("header %+v", h)
	}
	if h := tartree.Header("usr/bin/x", n, time.Time{}, ""); !h.ModTime.Equal(n.ModTime) {
		t.Fatalf("zero clamp changed the mtime to %v", h.ModTime)
	}
	l := tartree.Header("usr/bin/y", n, mtime, "./usr/bin/x")
	if l.Typeflag != tar.TypeLink || l.Linkname != "./usr/bin/x" || l.Size != 0 || l.Mode != 0o4755 || l.Uid != 7 {
		t.Fatalf("hard link header %+v", l)
	}
	if d := tartree.Header("etc", dir(), mtime, ""); d.Name != "./etc/" || d.Size != 0 {
		t.Fatalf("directory header %+v", d)
	}
	if r := tartree.Header(".", dir(), mtime, ""); r.Name != "./" {
		t.Fatalf("root header name %q", r.Name)
	}
	// AppendHeader is what tar.Writer writes, and reuses dst.
	var want bytes.Buffer
	if err := tar.NewWriter(&want).WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	got, err := tartree.AppendHeader(make([]byte, 0, 8), h)
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("AppendHeader = %d bytes, %v; tar.Writer wrote %d", len(got), err, want.Len())
	}
	prefix := []byte("keep")
	if got, _ := tartree.AppendHeader(prefix, h); !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[4:], want.Bytes()) {
		t.Fatal("AppendHeader did not append to dst")
	}
}

// TestHardLinks pins the hard link rules of the archive: nodes sharing a
// non-zero Inode are one file, its first member in canonical order carries
// the content and the later ones link to it; only regular files and
// symlinks are linked (as GNU tar), and when the first member leaves the
// tree the next one carries the content.
func TestHardLinks(t *testing.T) {
	linked := func(n *tartree.Node, inode uint64) *tartree.Node { n.Inode = inode; return n }
	special := func(typ byte, inode uint64) *tartree.Node {
		return &tartree.Node{Type: typ, Mode: 0o600, ModTime: mtime, Devmajor: 1, Devminor: 3, Inode: inode}
	}
	for _, tc := range []struct {
		name string
		puts []string // "path inode" pairs, put in this order
		make func(name string, inode uint64) *tartree.Node
		then func(*tartree.Tree)
		want string
	}{{
		name: "the first member in canonical order carries the content",
		puts: []string{"z/last 1", "a/first 1", "m/middle 1", "solo 0", "solo2 0"},
		want: "./ dir\n./a/ dir\n./a/first reg size=6\n./m/ dir\n./m/middle link to ./a/first\n" +
			"./solo reg size=6\n./solo2 reg size=6\n./z/ dir\n./z/last link to ./a/first\n",
	}, {
		name: "the first member removed, the next carries the content",
		puts: []string{"a 1", "b 1", "c 1"},
		then: func(tree *tartree.Tree) { tree.Remove("a") },
		want: "./ dir\n./b reg size=6\n./c link to ./b\n",
	}, {
		name: "the first member replaced, the replacement is not in the group",
		puts: []string{"a 1", "b 1"},
		then: func(tree *tartree.Tree) { tree.Put("a", file("new")) },
		want: "./ dir\n./a reg size=3\n./b reg size=6\n",
	}, {
		name: "symlinks are linked",
		puts: []string{"s1 2", "s2 2"},
		make: func(string, uint64) *tartree.Node { return symlink("t") },
		want: "./ dir\n./s1 symlink -> t\n./s2 link to ./s1\n",
	}, {
		name: "directories are not linked",
		puts: []string{"d1 3", "d2 3"},
		make: func(string, uint64) *tartree.Node { return dir() },
		want: "./ dir\n./d1/ dir\n./d2/ dir\n",
	}, {
		name: "fifos are not linked",
		puts: []string{"f1 4", "f2 4"},
		make: func(_ string, inode uint64) *tartree.Node { return special(tar.TypeFifo, inode) },
		want: "./ dir\n./f1 fifo\n./f2 fifo\n",
	}, {
		name: "devices are not linked",
		puts: []string{"c1 5", "c2 5"},
		make: func(_ string, inode uint64) *tartree.Node { return special(tar.TypeChar, inode) },
		want: "./ dir\n./c1 char 1:3\n./c2 char 1:3\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tree := tartree.New()
			for _, put := range tc.puts {
				p, inode, _ := strings.Cut(put, " ")
				n, _ := strconv.ParseUint(inode, 10, 64)
				node := file("shared")
				if tc.make != nil {
					node = tc.make(p, n)
				}
				tree.Put(p, linked(node, n))
			}
			if tc.then != nil {
				tc.then(tree)
			}
			wantMembers(t, tree, tc.want)
		})
	}
}

// wantMembers fails t unless the archive of tree has these members, as
// describeShort lists them.
func wantMembers(t *testing.T, tree *tartree.Tree, want string) {
	t.Helper()
	if got := describeShort(written(t, tree)); got != want {
		t.Fatalf("members:\n%s\nwant:\n%s", got, want)
	}
}

// describeShort is one line per member: name, type, and what identifies
// its content.
func describeShort(hdrs []*tar.Header) string {
	var b strings.Builder
	for _, h := range hdrs {
		b.WriteString(h.Name + " " + map[byte]string{
			tar.TypeDir:     "dir",
			tar.TypeReg:     "reg size=" + itoa(h.Size),
			tar.TypeLink:    "link to " + h.Linkname,
			tar.TypeSymlink: "symlink -> " + h.Linkname,
			tar.TypeFifo:    "fifo",
			tar.TypeChar:    "char " + itoa(h.Devmajor) + ":" + itoa(h.Devminor),
		}[h.Typeflag] + "\n")
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// flattened is the tree rootfs.Flatten makes of an image of these layers.
func flattened(t *testing.T, layers ...[]testimage.Entry) (*tartree.Tree, error) {
	t.Helper()
	img, err := testimage.Layers(v1.Config{}, testimage.Gzip, layers...)
	if err != nil {
		t.Fatal(err)
	}
	s, stored := testbundle.Store(t, testimage.Case{Name: "links", Image: img}, "links")
	f, err := s.Flatten(context.Background(), stored, rootfs.FlattenOptions{TempDir: t.TempDir()})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { f.Close() })
	return f.Tree, nil
}

// TestHardLinksFromLayers pins how a layer's hard links become tree nodes
// (the rules the unpacker follows too): a link to an earlier member joins
// its group, a link to a directory or to a path not (yet) there is
// refused, and a target replaced by a later layer leaves the link with the
// old content, a file of its own.
func TestHardLinksFromLayers(t *testing.T) {
	base := []testimage.Entry{testimage.Dir("etc", 0o755), testimage.File("etc/a", 0o644, "old")}
	t.Run("link to an earlier member", func(t *testing.T) {
		tree, err := flattened(t, append(base, testimage.Hardlink("etc/b", "etc/a")))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := tree.Get("etc/a"), tree.Get("etc/b"); a == nil || b == nil || a.Inode == 0 || a.Inode != b.Inode {
			t.Fatalf("etc/a %+v and etc/b %+v are not one group", a, b)
		}
		want := "./ dir\n./etc/ dir\n./etc/a reg size=3\n./etc/b link to ./etc/a\n"
		wantMembers(t, tree, want)
	})
	t.Run("link target replaced by a later layer", func(t *testing.T) {
		tree, err := flattened(t, append(base, testimage.Hardlink("etc/b", "etc/a")),
			[]testimage.Entry{testimage.File("etc/a", 0o644, "newer")})
		if err != nil {
			t.Fatal(err)
		}
		want := "./ dir\n./etc/ dir\n./etc/a reg size=5\n./etc/b reg size=3\n"
		wantMembers(t, tree, want)
	})
	t.Run("link target removed by a later layer", func(t *testing.T) {
		tree, err := flattened(t, append(base, testimage.Hardlink("etc/b", "etc/a")),
			[]testimage.Entry{testimage.Whiteout("etc/a")})
		if err != nil {
			t.Fatal(err)
		}
		want := "./ dir\n./etc/ dir\n./etc/b reg size=3\n"
		wantMembers(t, tree, want)
	})
	for _, tc := range []struct {
		name  string
		entry testimage.Entry
		words string
	}{
		{"link to a directory", testimage.Hardlink("etc/b", "etc"), "the target is a directory"},
		{"link to a later member", testimage.Hardlink("etc/b", "etc/z"), "the target does not exist"},
		{"link out of the root", testimage.Hardlink("etc/b", "../../etc/passwd"), "outside the root"},
	} {
		t.Run(tc.name+" refused", func(t *testing.T) {
			layer := append(append([]testimage.Entry{}, base...), tc.entry, testimage.File("etc/z", 0o644, "z"))
			_, err := flattened(t, layer)
			if err == nil || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("Flatten = %v, want an error saying %q", err, tc.words)
			}
		})
	}
}
