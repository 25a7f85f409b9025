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
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrEscape means a symlink's target climbs above the root with "..".
var ErrEscape = errors.New("symlink points outside the root")

// ErrLoop means more than MaxHops symlinks were followed.
var ErrLoop = errors.New("too many levels of symbolic links")

// ErrTooLong means a symlink's target is longer than PATH_MAX: no file
// system holds one, and following it could not end well.
var ErrTooLong = errors.New("symlink target longer than PATH_MAX")

// pathMax is Linux's PATH_MAX.
const pathMax = 4096

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
	// resolved path once it is resolved (nothing below a missing directory
	// exists, so the rest is resolved as text until a ".." climbs back, as
	// umoci's SecureJoin does). It may create them. Without it, a missing
	// component fails with fs.ErrNotExist, as in the kernel.
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
			if len(target) >= pathMax {
				return "", ErrTooLong
			}
			if strings.HasPrefix(target, "/") {
				resolved = resolved[:0]
				missingFrom = -1
			}
			pending = append(strings.Split(target, "/"), pending...)
			continue
		case Missing:
			if o.Missing == nil {
				// As the kernel: "missing/.." fails too.
				return "", &fs.PathError{Op: "resolve", Path: rel, Err: fs.ErrNotExist}
			}
			missingFrom = len(resolved)
		}
		resolved = append(resolved, c)
	}
	if missingFrom >= 0 {
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

// DirLookup is a Lookup over the directory dir by path name, for callers
// that write the tree by path themselves. The directories above p are the
// ones Resolve resolved, so no symlink is on the way; p itself is not
// followed.
func DirLookup(dir string) Lookup {
	return func(p string) (Kind, string, error) {
		full := filepath.Join(dir, p)
		fi, err := os.Lstat(full)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return Missing, "", nil
		case err != nil:
			return Missing, "", err
		case fi.IsDir():
			return Dir, "", nil
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(full)
			return Symlink, t, err
		}
		return Other, "", nil
	}
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
