// Package saferoot resolves and opens paths inside a root directory (a
// rootfs, an image store) without ever leaving it. Resolve is the one
// symlink resolver nexcage has: the unpacker, the flattener, the template
// writer and the in-memory tree all walk paths with it, each giving it a
// Lookup over its own view of the tree. Root applies it to a directory on
// disk, with every operation relative to a descriptor of the root and no
// symlink followed by the kernel: what a hostile layer left behind cannot
// redirect a chmod, a read or a delete to the host.
package saferoot

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// ErrEscape means a symlink's target climbs above the root with "..".
var ErrEscape = errors.New("symlink points outside the root")

// ErrLoop means more than MaxHops symlinks were followed.
var ErrLoop = errors.New("too many levels of symbolic links")

// MaxHops is the symlink limit, Linux's MAXSYMLINKS.
const MaxHops = 40

// Kind is what a Lookup found at a path.
type Kind uint8

const (
	// Missing: nothing there.
	Missing Kind = iota
	// Dir is a directory.
	Dir
	// Symlink is a symbolic link; Lookup returns its target.
	Symlink
	// Other is any other file.
	Other
)

// Lookup reports what is at the slash path p (relative to the root, every
// directory above it already resolved) without following a symlink at p.
// It may map kinds to suit its caller (a file where a directory is needed
// reported as Missing when the caller replaces it), or fail.
type Lookup func(p string) (k Kind, target string, err error)

// Options tune Resolve.
type Options struct {
	// Clamp keeps ".." at the root there, as the kernel does in a chroot
	// and as a container sees its rootfs. Without it, a symlink that
	// climbs above the root is refused with ErrEscape: image layers that
	// try are hostile.
	Clamp bool
	// Missing is called, in order, with each missing component of the
	// resolved path (nothing below a missing directory exists, so the rest
	// is resolved as text until a ".." climbs back). It may create them.
	// Without it, a missing component fails with fs.ErrNotExist.
	Missing func(p string) error
}

// Resolve resolves rel (slash-separated; a leading "/" means the root) the
// way a process chrooted into the root would, following every symlink,
// the last component's too: absolute targets start again at the root.
// It returns the resolved slash path, "." for the root itself.
func Resolve(rel string, look Lookup, o Options) (string, error) {
	pending := strings.Split(rel, "/")
	resolved := make([]string, 0, len(pending))
	missingFrom := -1 // index in resolved of the first missing component
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(resolved) == 0 {
				if o.Clamp {
					continue
				}
				return "", ErrEscape
			}
			resolved = resolved[:len(resolved)-1]
			if len(resolved) <= missingFrom {
				missingFrom = -1
			}
			continue
		}
		if missingFrom >= 0 {
			resolved = append(resolved, c)
			continue
		}
		k, target, err := look(strings.Join(append(resolved, c), "/"))
		if err != nil {
			return "", err
		}
		switch k {
		case Symlink:
			if hops++; hops > MaxHops {
				return "", ErrLoop
			}
			if strings.HasPrefix(target, "/") {
				resolved = resolved[:0]
				missingFrom = -1
			}
			pending = append(strings.Split(target, "/"), pending...)
			continue
		case Missing:
			missingFrom = len(resolved)
		}
		resolved = append(resolved, c)
	}
	if missingFrom >= 0 {
		if o.Missing == nil {
			return "", &fs.PathError{Op: "resolve", Path: rel, Err: fs.ErrNotExist}
		}
		for i := missingFrom; i < len(resolved); i++ {
			if err := o.Missing(strings.Join(resolved[:i+1], "/")); err != nil {
				return "", err
			}
		}
	}
	if len(resolved) == 0 {
		return ".", nil
	}
	return strings.Join(resolved, "/"), nil
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
