// Package tartree is an in-memory model of a final rootfs: each path's
// metadata and where its content can be read. Every source of a template
// (a rootfs directory, or image layers flattened on the fly) builds one,
// and one writer serialises it, so every path gives the same bytes.
package tartree

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/nexcage/nexcage/internal/saferoot"
)

// Node is one path of the final tree.
type Node struct {
	Type     byte  // tar.TypeDir, TypeReg, TypeSymlink, TypeChar, TypeBlock, TypeFifo
	Mode     int64 // permission bits plus setuid, setgid and sticky
	UID, GID int
	Size     int64
	ModTime  time.Time
	Linkname string // symlink target
	Devmajor int64
	Devminor int64
	// Xattrs are the ones a template keeps (user.*, security.capability).
	Xattrs map[string]string
	// Inode groups hard links: regular files or symlinks sharing a
	// non-zero Inode are one file, written as one member and hard links
	// to it (GNU tar links no other type).
	Inode uint64
	// Open returns the content of a regular file.
	Open func() (io.ReadCloser, error)
	// Compressed, when set, is the content already compressed as the
	// template writer would compress it (see internal/zframe).
	Compressed *Compressed
	// Source is where Open reads the content from, when that is a range of
	// a file: archive bytes prepared from it ahead of time (a Run) are
	// reused only for the node whose content is this very range.
	Source Section

	children map[string]*Node
}

// Compressed is a file's content as compressed frames, frame i at
// Frames[i] in From. Key names the compressor settings that made them.
type Compressed struct {
	Key    string
	Frames []Extent
	From   io.ReaderAt
}

// Extent is a byte range.
type Extent struct{ Off, Len int64 }

// Section is the content of a regular file stored at Off in From.
type Section struct {
	From io.ReaderAt
	Off  int64
}

// Tree is a rootfs: the root directory node and everything below it.
type Tree struct {
	Root *Node
	// Runs are stretches of the archive compressed ahead of time, by the
	// path of their first member (see internal/zframe); the writer uses
	// one only where the archive turns out to hold exactly its members.
	Runs map[string][]*Run
}

// New returns a tree holding only a root directory.
func New() *Tree {
	return &Tree{Root: &Node{Type: tar.TypeDir, Mode: 0o755, children: map[string]*Node{}}}
}

// Put places n at the slash path p ("." is the root), creating missing
// parents as plain root-owned 0755 directories, like tar does.
func (t *Tree) Put(p string, n *Node) {
	p = cleanRel(p)
	if p == "." {
		n.children = t.Root.children
		if n.children == nil {
			n.children = map[string]*Node{}
		}
		t.Root = n
		return
	}
	parent := t.Root
	parts := strings.Split(p, "/")
	for _, part := range parts[:len(parts)-1] {
		next := parent.children[part]
		if next == nil || next.Type != tar.TypeDir {
			next = &Node{Type: tar.TypeDir, Mode: 0o755, ModTime: n.ModTime, children: map[string]*Node{}}
			parent.children[part] = next
		}
		parent = next
	}
	if n.Type == tar.TypeDir {
		// A directory replacing a directory keeps its contents.
		if old := parent.children[parts[len(parts)-1]]; old != nil && old.Type == tar.TypeDir {
			n.children = old.children
		}
		if n.children == nil {
			n.children = map[string]*Node{}
		}
	}
	parent.children[parts[len(parts)-1]] = n
}

// Get returns the node at p without following symlinks.
func (t *Tree) Get(p string) *Node {
	p = cleanRel(p)
	n := t.Root
	if p == "." {
		return n
	}
	for _, part := range strings.Split(p, "/") {
		if n.Type != tar.TypeDir {
			return nil
		}
		if n = n.children[part]; n == nil {
			return nil
		}
	}
	return n
}

// Remove deletes the node at p with everything below it.
func (t *Tree) Remove(p string) {
	p = cleanRel(p)
	dir, name := path.Split(p)
	if parent := t.Get(dir); parent != nil && parent.Type == tar.TypeDir {
		delete(parent.children, name)
	}
}

// Resolve follows symlinks the way the container will see them: absolute
// targets start at the rootfs, and ".." never leaves it. It returns the node
// and its resolved path, or nil when the path does not exist.
func (t *Tree) Resolve(p string) (*Node, string) {
	rp, n, err := saferoot.Resolve(cleanRel(p), walker{t}, saferoot.Options[*Node]{Clamp: true})
	if err != nil {
		return nil, ""
	}
	return n, rp
}

// walker is a tree as saferoot.Resolve walks it, node by node: each
// component costs one lookup in its parent's entries. It stays unexported
// so that the API names no internal type (saferoot.Kind).
type walker struct{ t *Tree }

func (w walker) Root() *Node { return w.t.Root }

func (walker) Child(dir *Node, name string) (*Node, saferoot.Kind, string, error) {
	n := dir.Child(name)
	switch {
	case n == nil:
		return nil, saferoot.Missing, "", nil
	case n.Type == tar.TypeSymlink:
		return n, saferoot.Symlink, n.Linkname, nil
	case n.Type == tar.TypeDir:
		return n, saferoot.Dir, "", nil
	}
	return n, saferoot.Other, "", nil
}

// ReadFile reads a regular file, following symlinks inside the tree.
func (t *Tree) ReadFile(p string, limit int64) ([]byte, error) {
	n, _ := t.Resolve(p)
	if n == nil || n.Type != tar.TypeReg || n.Open == nil {
		return nil, fmt.Errorf("%s: not a regular file in the rootfs", p)
	}
	rc, err := n.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}

// Walk visits every node in template order: depth first, each directory's
// entries sorted bytewise by name, a directory before its contents. The
// path passed is "." for the root, else slash-separated without "./".
func (t *Tree) Walk(fn func(p string, n *Node) error) error {
	return walk(".", t.Root, fn)
}

func walk(p string, n *Node, fn func(string, *Node) error) error {
	if err := fn(p, n); err != nil {
		return err
	}
	if n.Type != tar.TypeDir {
		return nil
	}
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cp := name
		if p != "." {
			cp = p + "/" + name
		}
		if err := walk(cp, n.children[name], fn); err != nil {
			return err
		}
	}
	return nil
}

// Children lists a directory's entry names, sorted.
func (n *Node) Children() []string {
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// ClearChildren empties a directory node.
func (n *Node) ClearChildren() { n.children = map[string]*Node{} }

func cleanRel(p string) string {
	p = path.Clean("/" + strings.TrimPrefix(p, "./"))
	if p == "/" {
		return "."
	}
	return p[1:]
}

// Child returns a directory's entry name, or nil when n is not a
// directory or has no such entry: resolvers walk the tree one component
// at a time with it instead of from the root for every prefix.
func (n *Node) Child(name string) *Node {
	if n == nil || n.Type != tar.TypeDir {
		return nil
	}
	return n.children[name]
}

// SetChild makes c directory n's entry name, replacing what was there.
func (n *Node) SetChild(name string, c *Node) {
	if c.Type == tar.TypeDir && c.children == nil {
		c.children = map[string]*Node{}
	}
	n.children[name] = c
}
