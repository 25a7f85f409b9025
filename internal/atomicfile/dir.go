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

// ErrExists means the target of a Dir is a non-empty directory and the
// write was not forced, or is not a directory at all. rootfs and generate
// export it as their ErrBundleExists.
var ErrExists = errors.New("bundle exists")

// ExistsError is NewDir's refusal: Path is not a directory (NotDir), or
// a non-empty one and the write was not forced. It is ErrExists.
type ExistsError struct {
	Path   string
	NotDir bool
}

// Error says what is in the way, and the ways out in a library's words.
func (e *ExistsError) Error() string {
	if e.NotDir {
		return fmt.Sprintf("bundle path %s exists and is not a directory: choose another path", e.Path)
	}
	return fmt.Sprintf("bundle directory %s is not empty: choose a new directory, or force the write to replace its contents", e.Path)
}

// Is makes an ExistsError ErrExists.
func (e *ExistsError) Is(target error) bool { return target == ErrExists }

// Dir is a directory tree (a bundle) assembled under a temporary name
// beside its target and renamed into place once complete: a failure or a
// crash leaves no partial target, and replacing an old tree never loses it
// unless the new one is complete. What a killed process leaves behind has
// TempMarker in its name, for `check --repair` to find.
//
// The sequence is NewDir (may the target be written?), Create (make the
// temporary directory), fill Path, then Commit, or Abort on any failure
// (defer Cleanup(&err) does it).
type Dir struct {
	// Path is the temporary directory to fill, mode 0700 (a bundle may
	// hold setuid binaries: other users stay out, as umoci does).
	Path string

	target        string
	replace       bool
	createdParent string
	done          bool
}

// NewDir decides whether a tree may be written to target: a missing path
// or an empty directory may, a non-empty directory only when forced (it is
// then replaced whole). Refusals are *ExistsError.
func NewDir(target string, force bool) (*Dir, error) {
	d := &Dir{target: target}
	fi, err := os.Lstat(target)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &ExistsError{Path: target, NotDir: true}
	}
	entries, err := os.ReadDir(target)
	if err != nil {
		return nil, err
	}
	if len(entries) != 0 && !force {
		return nil, &ExistsError{Path: target}
	}
	d.replace = true
	return d, nil
}

// Create makes the target's missing parents and the temporary directory
// Path beside the target.
func (d *Dir) Create() error {
	top, err := mkdirAllTracked(filepath.Dir(d.target))
	if err != nil {
		return fmt.Errorf("create the parent of bundle %s: %w", d.target, err)
	}
	d.createdParent = top
	tmp, err := TempDir(d.target)
	if err != nil {
		d.removeParent()
		return fmt.Errorf("create bundle %s: %w", d.target, err)
	}
	d.Path = tmp
	if err := os.Chmod(tmp, 0o700); err != nil {
		d.Abort(nil)
		return err
	}
	return nil
}

// Commit renames the finished tree over the target. An existing target is
// first moved aside, so at no moment is there a partial one, and is put
// back if the swap fails; the old tree is deleted last.
func (d *Dir) Commit() error {
	if d.done {
		return fmt.Errorf("%s: already committed or aborted", d.target)
	}
	if !d.replace {
		if err := os.Rename(d.Path, d.target); err != nil {
			return err
		}
		d.done = true
		return nil
	}
	old, err := TempDir(d.target)
	if err != nil {
		return err
	}
	if err := os.Rename(d.target, filepath.Join(old, "old")); err != nil {
		os.Remove(old)
		return fmt.Errorf("move the old %s aside: %w", d.target, err)
	}
	if err := os.Rename(d.Path, d.target); err != nil {
		os.Rename(filepath.Join(old, "old"), d.target)
		os.Remove(old)
		return fmt.Errorf("put %s in place: %w", d.target, err)
	}
	// The new tree is in place: nothing is left for Abort to remove.
	d.done = true
	if err := RemoveTree(old); err != nil {
		return fmt.Errorf("remove the replaced tree at %s: %w", old, err)
	}
	return nil
}

// Abort removes the temporary tree and the parents Create made. It
// returns err with the temporary path replaced by the target's, so that a
// message names the directory the caller asked for rather than one that no
// longer exists. After Commit it only returns err, so it can be deferred
// for every failure.
func (d *Dir) Abort(err error) error {
	if d.done {
		return err
	}
	d.done = true
	if d.Path != "" {
		RemoveTree(d.Path)
		err = errkind.Replace(err, d.Path, d.target)
	}
	d.removeParent()
	return err
}

// Cleanup is Abort for a deferred call in a function whose error result
// *errp says whether it failed: it aborts (and rewords *errp) only then.
func (d *Dir) Cleanup(errp *error) {
	if *errp != nil {
		*errp = d.Abort(*errp)
	}
}

func (d *Dir) removeParent() {
	if d.createdParent != "" {
		os.RemoveAll(d.createdParent) // only directories Create made
	}
}

// mkdirAllTracked is os.MkdirAll that returns the topmost directory it
// created ("" if none), so a failure can remove exactly that.
func mkdirAllTracked(dir string) (string, error) {
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
