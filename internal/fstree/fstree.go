// Package fstree snapshots a directory tree with every attribute a container
// template must preserve, and compares two snapshots entry by entry. Tests
// use it to prove that two ways of producing a rootfs agree.
package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Entry is one path's attributes.
type Entry struct {
	Type     string // "file", "dir", "symlink", "char", "block", "fifo", "socket"
	Mode     os.FileMode
	UID, GID uint32
	Size     int64
	SHA256   string // regular files
	Link     string // symlink target
	Major    uint32 // devices
	Minor    uint32
	Xattrs   map[string]string
	// MTime is the modification time in whole seconds, when Options.MTime.
	MTime int64
	// Group lists the other paths sharing this inode (hard links), sorted.
	Group []string
	inode uint64
}

// Tree maps a slash path relative to the root ("." for the root) to its entry.
type Tree map[string]*Entry

// Options filter what Snapshot records.
type Options struct {
	// Skip reports paths to leave out with everything below them.
	Skip func(rel string) bool
	// XattrFilter keeps an xattr name when it returns true; nil keeps all.
	XattrFilter func(name string) bool
	// MTime records modification times (seconds) for comparison.
	MTime bool
}

// TemplateXattrs keeps the xattrs a template keeps, and PVE's extraction
// restores: user.* (but the rootless bookkeeping) and security.capability.
func TemplateXattrs(name string) bool {
	return name == "security.capability" || (strings.HasPrefix(name, "user.") && name != "user.rootlesscontainers")
}

// TemplateView compares a rootfs with what its template extracts to: what
// is under /dev left out (a template keeps /dev empty), the xattrs of
// TemplateXattrs, mtimes.
var TemplateView = Options{
	Skip:        func(rel string) bool { return strings.HasPrefix(rel, "dev/") },
	XattrFilter: TemplateXattrs,
	MTime:       true,
}

// Snapshot walks root without following symlinks.
func Snapshot(root string, o Options) (Tree, error) {
	t := Tree{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if o.Skip != nil && rel != "." && o.Skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		e, err := stat(p, o)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		t[rel] = e
		// Hard-linked symlinks are one inode too, and GNU tar (so PVE's
		// templates) keeps them linked; fifos and devices it does not.
		if e.Type == "file" || e.Type == "symlink" {
			inodes[e.inode] = append(inodes[e.inode], rel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, paths := range inodes {
		if len(paths) < 2 {
			continue
		}
		sort.Strings(paths)
		for _, p := range paths {
			for _, q := range paths {
				if q != p {
					t[p].Group = append(t[p].Group, q)
				}
			}
		}
	}
	return t, nil
}

func stat(p string, o Options) (*Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, err
	}
	e := &Entry{
		Mode:  os.FileMode(st.Mode & 0o7777),
		UID:   st.Uid,
		GID:   st.Gid,
		inode: st.Ino,
	}
	if o.MTime {
		e.MTime = st.Mtim.Sec
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		e.Type, e.Size = "file", st.Size
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		e.SHA256 = hex.EncodeToString(h.Sum(nil))
	case syscall.S_IFDIR:
		e.Type = "dir"
	case syscall.S_IFLNK:
		e.Type = "symlink"
		l, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		e.Link = l
		e.Mode = 0 // symlink modes mean nothing on Linux
	case syscall.S_IFCHR, syscall.S_IFBLK:
		e.Type = "char"
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			e.Type = "block"
		}
		e.Major, e.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	case syscall.S_IFIFO:
		e.Type = "fifo"
	case syscall.S_IFSOCK:
		e.Type = "socket"
	}
	xattrs, err := listXattrs(p)
	if err != nil {
		return nil, err
	}
	for name, v := range xattrs {
		if o.XattrFilter != nil && !o.XattrFilter(name) {
			continue
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string]string{}
		}
		e.Xattrs[name] = v
	}
	return e, nil
}

func listXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		vbuf := make([]byte, 64*1024)
		vn, err := unix.Lgetxattr(p, name, vbuf)
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out[name] = string(vbuf[:vn])
	}
	return out, nil
}

// Diff lists every difference between want and got, one line each, sorted;
// none means the trees are equal.
func Diff(want, got Tree) []string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s: missing (want %s)", p, w.Type))
			continue
		}
		for _, d := range diffEntry(w, g) {
			out = append(out, p+": "+d)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%s: unexpected %s", p, g.Type))
		}
	}
	sort.Strings(out)
	return out
}

func diffEntry(w, g *Entry) []string {
	var d []string
	check := func(field string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			d = append(d, fmt.Sprintf("%s %v, want %v", field, b, a))
		}
	}
	check("type", w.Type, g.Type)
	check("mode", w.Mode, g.Mode)
	check("uid", w.UID, g.UID)
	check("gid", w.GID, g.GID)
	check("size", w.Size, g.Size)
	check("sha256", w.SHA256, g.SHA256)
	check("link", w.Link, g.Link)
	check("device", fmt.Sprint(w.Major, ",", w.Minor), fmt.Sprint(g.Major, ",", g.Minor))
	check("xattrs", sortedMap(w.Xattrs), sortedMap(g.Xattrs))
	check("hardlinks", w.Group, g.Group)
	check("mtime", w.MTime, g.MTime)
	return d
}

func sortedMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%q ", k, m[k])
	}
	return sb.String()
}
