package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nexcage/nexcage/internal/errkind"
)

// CheckDirTarget decides whether a tree may be written to target: a
// missing path or an empty directory may, a non-empty directory only when
// forced. replace says an existing directory must be swapped out. Refusals
// carry kind (errors.Is) and name the target and the fix.
func CheckDirTarget(target string, force bool, kind error) (replace bool, err error) {
	fi, err := os.Lstat(target)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, errkind.Errorf(kind, "bundle path %s exists and is not a directory: choose another path", target)
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return false, err
	}
	if len(entries) == 0 {
		return true, nil
	}
	if !force {
		return false, errkind.Errorf(kind, "bundle directory %s is not empty: choose a new directory, or pass --force to replace its contents", target)
	}
	return true, nil
}

// ReplaceDir renames the finished tree tmp over target. An existing target
// is first moved aside, so at no moment is there a partial one, and is put
// back if the swap fails; removeAll then deletes the old tree (rootless
// trees need more than os.RemoveAll).
func ReplaceDir(tmp, target string, replace bool, removeAll func(string) error) error {
	if !replace {
		return os.Rename(tmp, target)
	}
	old, err := TempDir(target)
	if err != nil {
		return err
	}
	if err := os.Rename(target, filepath.Join(old, "old")); err != nil {
		os.Remove(old)
		return fmt.Errorf("move the old %s aside: %w", target, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Rename(filepath.Join(old, "old"), target)
		os.Remove(old)
		return fmt.Errorf("put %s in place: %w", target, err)
	}
	if err := removeAll(old); err != nil {
		return fmt.Errorf("remove the replaced tree at %s: %w", old, err)
	}
	return nil
}

// MkdirAllTracked is os.MkdirAll that returns the topmost directory it
// created ("" if none), so a failure can remove exactly that.
func MkdirAllTracked(dir string) (string, error) {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	return top, os.MkdirAll(dir, 0o755)
}

// Within reports whether p is dir or below it, lexically.
func Within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// TreeSize is the size of the regular files of a file or a tree.
func TreeSize(p string) int64 {
	var n int64
	filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// RemoveTree is os.RemoveAll that also removes the read-only directories
// an ordinary user's rootless rootfs holds (0555 /proc and the like): it
// gives the caller's own directories write permission and tries again.
func RemoveTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}
