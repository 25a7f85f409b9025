// Package saferoot resolves and opens paths inside a root directory (a
// rootfs, an image store) without ever leaving it. Resolve is the one
// symlink resolver nexcage has: the unpacker, the flattener, the template
// writer and the in-memory tree all walk paths with it, each giving it a
// Walker over its own view of the tree (nodes, or paths on disk). Root applies it to a directory on
// disk, with every operation relative to a descriptor of the root and no
// symlink followed by the kernel: what a hostile layer left behind cannot
// redirect a chmod, a read or a delete to the host.
package saferoot

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
)

// ErrEscape means a symlink's target climbs above the root with "..".
var ErrEscape = errors.New("symlink points outside the root")

// ErrLoop means more than MaxHops symlinks were followed. Resolve returns
// it inside a *limits.Error on limits.SymlinkHops.
var ErrLoop = errors.New("too many levels of symbolic links")

// ErrTooLong means a symlink's target is longer than PATH_MAX: no file
// system holds one, and following it could not end well. Resolve returns
// it inside a *limits.Error on limits.PathLength.
var ErrTooLong = errors.New("symlink target longer than PATH_MAX")

// ErrPathTooLong means the resolved path, symlinks followed, is longer
// than PATH_MAX: each link may be legal, their chain names a path the
// kernel would refuse (ENAMETOOLONG). Resolve returns it inside a
// *limits.Error on limits.PathLength.
var ErrPathTooLong = errors.New("resolves through symlinks to a path longer than PATH_MAX")

// PathMax is Linux's PATH_MAX, the terminating NUL included.
const PathMax = 4096

// MaxHops is the symlink limit, Linux's MAXSYMLINKS.
const MaxHops = 40

// Kind is what a Walker found at a name.
type Kind uint8

const (
	// Missing: nothing there.
	Missing Kind = iota
	// Dir is a directory.
	Dir
	// Symlink is a symbolic link; the Walker returns its target.
	Symlink
	// Other is any other file.
	Other
)

// Walker is a tree as Resolve walks it: one directory entry at a time,
// from the handle (a node, a path, ...) of the directory holding it, so
// that each component costs one lookup in the caller's structure rather
// than a walk from the root.
type Walker[N any] interface {
	// Root is the handle of the root directory.
	Root() N
	// Child reports the entry name of the directory dir (a handle Root,
	// Child or Options.Missing returned for a directory) without
	// following a symlink there: its handle, kind and, for a symlink, its
	// target. It may map kinds to suit its caller (a file where a
	// directory is needed reported as Missing when the caller replaces
	// it), or fail.
	Child(dir N, name string) (n N, k Kind, target string, err error)
}

// Lookup reports what is at the slash path p (relative to the root, every
// directory above it already resolved) without following a symlink at p.
// It is a Walker whose handles are the resolved slash paths ("." for the
// root), for trees reached by path: a directory on disk.
type Lookup func(p string) (k Kind, target string, err error)

// Root is the root's path, ".".
func (Lookup) Root() string { return "." }

// Child looks up Join(dir, name).
func (l Lookup) Child(dir, name string) (string, Kind, string, error) {
	p := Join(dir, name)
	k, target, err := l(p)
	return p, k, target, err
}

// Join is the slash path of name in the resolved directory dir.
func Join(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// Options tune Resolve.
type Options[N any] struct {
	// Clamp keeps ".." at the root there, as the kernel does in a chroot
	// and as a container sees its rootfs. Without it, a symlink that
	// climbs above the root is refused with ErrEscape: image layers that
	// try are hostile.
	Clamp bool
	// Missing is called, in order, for each missing component of the
	// resolved path once the whole path is resolved (nothing below a
	// missing directory exists, so the rest is resolved as text until a
	// ".." climbs back, as umoci's SecureJoin does), with the handle of
	// the directory above it, the one the previous call returned for a
	// missing one. It may create the directory and return its handle; the
	// walk goes on from there. Without it, a missing component fails with
	// fs.ErrNotExist, as in the kernel.
	Missing func(dir N, name string) (N, error)
}

// Resolve resolves rel (slash-separated; a leading "/" means the root) the
// way a process chrooted into the root would, following every symlink,
// the last component's too: absolute targets start again at the root.
// It returns the resolved slash path ("." for the root itself) and its
// handle (the zero N for a missing component Options.Missing did not
// make).
//
// Each component costs one Child call: the handles of the resolved
// directories are kept on a stack that ".." pops. The work is bounded as
// the kernel bounds it: at most MaxHops symlinks, each target and the
// resolved path shorter than PathMax, refused with a *limits.Error
// wrapping ErrLoop, ErrTooLong or ErrPathTooLong.
func Resolve[N any](rel string, w Walker[N], o Options[N]) (string, N, error) {
	var zero N
	pending := strings.Split(rel, "/")
	// names[i] is the i-th resolved component, kinds[i] its kind and
	// nodes[i+1] its handle; nodes[0] is the root.
	names := make([]string, 0, len(pending))
	kinds := make([]Kind, 0, len(pending))
	nodes := make([]N, 1, len(pending)+1)
	nodes[0] = w.Root()
	missingFrom := -1 // index in names of the first missing component
	length := 0       // of "/" + the resolved path
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(names) == 0 {
				if o.Clamp {
					continue
				}
				return "", zero, ErrEscape
			}
			length -= len(names[len(names)-1]) + 1
			names, kinds, nodes = names[:len(names)-1], kinds[:len(kinds)-1], nodes[:len(nodes)-1]
			if len(names) <= missingFrom {
				missingFrom = -1
			}
			continue
		}
		n, k := zero, Missing
		// Below a missing directory or a non-directory nothing exists.
		if missingFrom < 0 && (len(kinds) == 0 || kinds[len(kinds)-1] == Dir) {
			var target string
			var err error
			n, k, target, err = w.Child(nodes[len(nodes)-1], c)
			if err != nil {
				return "", zero, err
			}
			if k == Symlink {
				if hops++; hops > MaxHops {
					return "", zero, &limits.Error{Limit: limits.SymlinkHops, Value: int64(hops), Max: MaxHops, Msg: ErrLoop.Error(), Kind: ErrLoop}
				}
				if len(target) >= PathMax {
					return "", zero, &limits.Error{Limit: limits.PathLength, Value: int64(len(target)), Max: PathMax - 1, Msg: ErrTooLong.Error(), Kind: ErrTooLong}
				}
				if strings.HasPrefix(target, "/") {
					names, kinds, nodes = names[:0], kinds[:0], nodes[:1]
					missingFrom, length = -1, 0
				}
				pending = append(strings.Split(target, "/"), pending...)
				continue
			}
		}
		if k == Missing && missingFrom < 0 {
			if o.Missing == nil {
				// As the kernel: "missing/.." fails too.
				return "", zero, &fs.PathError{Op: "resolve", Path: rel, Err: fs.ErrNotExist}
			}
			missingFrom = len(names)
		}
		if length += len(c) + 1; length >= PathMax {
			return "", zero, &limits.Error{Limit: limits.PathLength, Value: int64(length), Max: PathMax - 1, Msg: ErrPathTooLong.Error(), Kind: ErrPathTooLong}
		}
		names, kinds, nodes = append(names, c), append(kinds, k), append(nodes, n)
	}
	if missingFrom >= 0 {
		for i := missingFrom; i < len(names); i++ {
			n, err := o.Missing(nodes[i], names[i])
			if err != nil {
				return "", zero, err
			}
			nodes[i+1], kinds[i] = n, Dir
		}
	}
	if len(names) == 0 {
		return ".", nodes[0], nil
	}
	return strings.Join(names, "/"), nodes[len(nodes)-1], nil
}

// Refusal words a Resolve refusal for the archive entry that met it:
// what names it (`entry "etc/x"`, `member "./x"`) and kind marks it
// (errors.Is). A climb out of the root wraps kind; the kernel's bounds
// stay *limits.Error on their limit, with kind as their Kind. Any other
// error is returned as it is.
func Refusal(kind error, what string, err error) error {
	le, over := limits.As(err)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrEscape):
		return errkind.Errorf(kind, "%s is written through a symlink that points outside the root", what)
	case !over:
		return err
	case errors.Is(err, ErrLoop):
		return limits.Errorf(kind, le.Limit, le.Value, le.Max, "%s: too many levels of symbolic links", what)
	case errors.Is(err, ErrPathTooLong):
		return limits.Errorf(kind, le.Limit, le.Value, le.Max, "%s resolves through symlinks to a path longer than Linux's PATH_MAX (%d)", what, PathMax)
	case errors.Is(err, ErrTooLong):
		return limits.Errorf(kind, le.Limit, le.Value, le.Max, "%s is written through a symlink to a %d-byte target, more than Linux's limit of %d bytes", what, le.Value, le.Max)
	}
	return err
}

// clean checks a path handed to Root: relative, no "." or ".." component.
func clean(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" || p == "." {
		return ".", nil
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("saferoot: %q is not a resolved path", p)
		}
	}
	return p, nil
}
