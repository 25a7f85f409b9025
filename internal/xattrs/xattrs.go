// Package xattrs reads a file's extended attributes without following a
// symlink, for the stages that read a rootfs directory (convert and
// generate).
package xattrs

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Read returns the xattrs of p whose names keep accepts, or nil when it
// has none (or the filesystem has none at all). An attribute removed
// between listing and reading is skipped.
func Read(p string, keep func(string) bool) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		if name == "" || !keep(name) {
			continue
		}
		vsize, err := unix.Lgetxattr(p, name, nil)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read xattr %s: %w", name, err)
		}
		val := make([]byte, vsize)
		vsize, err = unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, fmt.Errorf("read xattr %s: %w", name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val[:vsize])
	}
	return out, nil
}
