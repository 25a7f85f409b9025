package testimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// Verify checks every expectation against the tree at rootfs and reports
// all mismatches at once, so one run shows everything an unpacker got wrong.
func Verify(rootfs string, want []Expect) error {
	var errs []error
	for _, w := range want {
		if err := w.check(rootfs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.Path, err))
		}
	}
	return errors.Join(errs...)
}

func (w Expect) check(rootfs string) error {
	p := filepath.Join(rootfs, filepath.FromSlash(w.Path))
	fi, err := os.Lstat(p)
	if w.Absent {
		// ENOTDIR counts as absent: after a dir->file type change,
		// "dir2file/child" cannot exist because dir2file is a file.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("exists (%s) but must be absent", fi.Mode().Type())
	}
	if err != nil {
		return err
	}

	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if got := typeflag(fi.Mode()); w.Type != 0 && got != w.Type {
		bad("type %s, want %s", typeName(got), typeName(w.Type))
	}
	if w.Body != "" {
		if body, err := os.ReadFile(p); err != nil {
			bad("reading body: %v", err)
		} else if string(body) != w.Body {
			bad("body %q, want %q", truncate(string(body)), truncate(w.Body))
		}
	}
	if w.Target != "" {
		if target, err := os.Readlink(p); err != nil {
			bad("readlink: %v", err)
		} else if target != w.Target {
			bad("symlink target %q, want %q", target, w.Target)
		}
	}
	if w.SameAs != "" {
		if other, err := os.Lstat(filepath.Join(rootfs, filepath.FromSlash(w.SameAs))); err != nil {
			bad("hard link peer: %v", err)
		} else if !os.SameFile(fi, other) {
			bad("not the same inode as %s", w.SameAs)
		}
	}
	if got := tarMode(fi.Mode()); w.Mode != 0 && got != w.Mode {
		bad("mode %#o, want %#o", got, w.Mode)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("no stat_t for %s", p)
	}
	if got := fmt.Sprintf("%d:%d", st.Uid, st.Gid); w.Owner != "" && got != w.Owner {
		bad("owner %s, want %s", got, w.Owner)
	}
	if w.Dev != "" {
		rdev := uint64(st.Rdev) // uint32 on some linux arches
		if got := fmt.Sprintf("%d:%d", devMajor(rdev), devMinor(rdev)); got != w.Dev {
			bad("device %s, want %s", got, w.Dev)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.Xattrs)) {
		got, err := getxattr(p, k)
		if err != nil {
			bad("xattr %s: %v", k, err)
		} else if !bytes.Equal(got, []byte(w.Xattrs[k])) {
			bad("xattr %s = %x, want %x", k, got, w.Xattrs[k])
		}
	}
	return errors.Join(errs...)
}

func typeflag(m fs.FileMode) byte {
	switch {
	case m.IsRegular():
		return tar.TypeReg
	case m.IsDir():
		return tar.TypeDir
	case m&fs.ModeSymlink != 0:
		return tar.TypeSymlink
	case m&fs.ModeCharDevice != 0:
		return tar.TypeChar
	case m&fs.ModeDevice != 0:
		return tar.TypeBlock
	case m&fs.ModeNamedPipe != 0:
		return tar.TypeFifo
	}
	return '?'
}

func typeName(t byte) string {
	switch t {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeChar:
		return "char device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	case tar.TypeLink:
		return "hard link"
	}
	return fmt.Sprintf("type %q", t)
}

// tarMode converts Go's FileMode back to the tar/stat spelling of the
// permission and special bits, the form the corpus tables use.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// devMajor and devMinor decode Linux's dev_t (glibc's gnu_dev_major/minor);
// syscall has no helper and x/sys would be a new direct dependency.
func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

func getxattr(path, key string) ([]byte, error) {
	for {
		n, err := syscall.Getxattr(path, key, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		m, err := syscall.Getxattr(path, key, buf)
		if errors.Is(err, syscall.ERANGE) {
			continue // grew between the two calls
		}
		if err != nil {
			return nil, err
		}
		return buf[:m], nil
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
