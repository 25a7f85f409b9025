package saferoot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/limits"
)

// Root is a directory on disk that paths are resolved and opened in.
// Every method works on paths Resolve returned (or that must hold no
// symlink at all): each is opened relative to the root's descriptor with
// the kernel refusing any symlink on the way, so a path that a symlink now
// redirects fails (ELOOP) instead of reaching somewhere else.
type Root struct {
	dir string
	fd  int
}

// Open opens dir as a root. dir itself may be reached through symlinks:
// it is the caller's choice, not the content's.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return &Root{dir: dir, fd: fd}, nil
}

// Close releases the root's descriptor.
func (r *Root) Close() error { return unix.Close(r.fd) }

func (r *Root) err(op, p string, err error) error {
	return &fs.PathError{Op: op, Path: path.Join(r.dir, p), Err: err}
}

// openBeneath opens p relative to the root with no symlink followed and
// no ".." climbing out, whatever the tree holds now.
func (r *Root) openBeneath(p string, flags int) (int, error) {
	if useOpenat2 {
		how := unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := unix.Openat2(r.fd, p, &how)
		if err != unix.ENOSYS && err != unix.EPERM {
			return fd, err
		}
	}
	// Before Linux 5.6, or a seccomp filter refusing openat2: walk one
	// component at a time, each opened without following a symlink.
	dir := r.fd
	rest := p
	for {
		c, tail, more := cut(rest)
		f := flags | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if more {
			f = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		}
		fd, err := unix.Openat(dir, c, f, 0)
		if dir != r.fd {
			unix.Close(dir)
		}
		if err != nil || !more {
			return fd, err
		}
		dir, rest = fd, tail
	}
}

// useOpenat2 is false in tests of the fallback.
var useOpenat2 = true

func cut(p string) (string, string, bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			return p[:i], p[i+1:], true
		}
	}
	return p, "", false
}

// parent opens the directory holding p and returns it with p's last
// component. The caller closes the descriptor unless it is the root's.
func (r *Root) parent(p string) (int, string, error) {
	dir, base := path.Split(p)
	if dir == "" {
		return r.fd, base, nil
	}
	fd, err := r.openBeneath(dir[:len(dir)-1], unix.O_PATH|unix.O_DIRECTORY)
	return fd, base, err
}

func (r *Root) release(fd int) {
	if fd != r.fd {
		unix.Close(fd)
	}
}

// Lstat stats p without following a symlink at p.
func (r *Root) Lstat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	p, err := clean(p)
	if err != nil {
		return st, err
	}
	if p == "." {
		return st, unix.Fstat(r.fd, &st)
	}
	pfd, base, err := r.parent(p)
	if err != nil {
		return st, r.err("lstat", p, err)
	}
	defer r.release(pfd)
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, r.err("lstat", p, err)
	}
	return st, nil
}

// Resolve resolves p as the container sees it: symlinks followed inside
// the root (absolute ones from the root, ".." stopping there), never out of
// it. The result holds no symlink: the other methods take it.
func (r *Root) Resolve(p string) (string, error) {
	resolved, _, err := Resolve(p, Lookup(r.Lookup), Options[string]{Clamp: true})
	return resolved, err
}

// Stat resolves p as Resolve does and stats what it names.
func (r *Root) Stat(p string) (string, unix.Stat_t, error) {
	resolved, err := r.Resolve(p)
	if err != nil {
		return "", unix.Stat_t{}, err
	}
	st, err := r.Lstat(resolved)
	return resolved, st, err
}

// Mkdir makes the directory p (its parents resolved, none a symlink) with
// mode perm, before the umask.
func (r *Root) Mkdir(p string, perm uint32) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	pfd, base, err := r.parent(p)
	if err != nil {
		return r.err("mkdir", p, err)
	}
	defer r.release(pfd)
	if err := unix.Mkdirat(pfd, base, perm); err != nil {
		return r.err("mkdir", p, err)
	}
	return nil
}

// Lookup is the directory on disk as a Lookup: a path that does not
// exist, or whose parent is not a directory, is Missing.
func (r *Root) Lookup(p string) (Kind, string, error) {
	st, err := r.Lstat(p)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return Missing, "", nil
	}
	if err != nil {
		return Missing, "", err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return Dir, "", nil
	case unix.S_IFLNK:
		t, err := r.Readlink(p)
		return Symlink, t, err
	}
	return Other, "", nil
}

// Readlink reads the symlink at p.
func (r *Root) Readlink(p string) (string, error) {
	p, err := clean(p)
	if err != nil {
		return "", err
	}
	pfd, base, err := r.parent(p)
	if err != nil {
		return "", r.err("readlink", p, err)
	}
	defer r.release(pfd)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(pfd, base, buf)
		if err != nil {
			return "", r.err("readlink", p, err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// OpenFile opens p with flags (unix.O_*); neither p nor any directory on
// the way may be a symlink.
func (r *Root) OpenFile(p string, flags int) (*os.File, error) {
	p, err := clean(p)
	if err != nil {
		return nil, err
	}
	fd, err := r.openBeneath(p, flags)
	if err != nil {
		return nil, r.err("open", p, err)
	}
	return os.NewFile(uintptr(fd), path.Join(r.dir, p)), nil
}

// Utimes sets p's access and modification times, not following a symlink
// at p.
func (r *Root) Utimes(p string, ts []unix.Timespec) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	if p == "." {
		// The root itself: the caller's directory, reached by its name.
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, r.dir, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return r.err("utimes", p, err)
		}
		return nil
	}
	pfd, base, err := r.parent(p)
	if err != nil {
		return r.err("utimes", p, err)
	}
	defer r.release(pfd)
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return r.err("utimes", p, err)
	}
	return nil
}

// SetDir gives the directory p a mode and times; it fails (ELOOP,
// ENOTDIR) if p is not a directory or is reached through a symlink.
func (r *Root) SetDir(p string, mode uint32, ts []unix.Timespec) error {
	f, err := r.OpenFile(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fchmod(fd, mode); err != nil {
		return r.err("chmod", p, err)
	}
	// utimensat(fd, NULL, ...) is futimens: the times of fd itself.
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return r.err("utimes", p, e)
	}
	return nil
}

// RemoveFile deletes the non-directory p if remove approves what is
// there now (lstat'ed through the directory descriptor that unlinks it).
// It reports whether it deleted p.
func (r *Root) RemoveFile(p string, remove func(st *unix.Stat_t) bool) (bool, error) {
	p, err := clean(p)
	if err != nil {
		return false, err
	}
	pfd, base, err := r.parent(p)
	if err != nil {
		return false, r.err("remove", p, err)
	}
	defer r.release(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, r.err("remove", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR || !remove(&st) {
		return false, nil
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return false, r.err("remove", p, err)
	}
	return true, nil
}

// ErrNotRegular means OpenRegular found a FIFO, a device, a socket or a
// directory where a regular file was wanted.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens the regular file p (a resolved path: neither p nor a
// directory on the way may be a symlink) for reading. A FIFO planted at p
// does not block the open (O_NONBLOCK); anything but a regular file is
// refused with ErrNotRegular, its FileInfo returned with the error for the
// caller's message.
func (r *Root) OpenRegular(p string) (*os.File, fs.FileInfo, error) {
	f, err := r.OpenFile(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fi, r.err("open", p, fmt.Errorf("%w (%s)", ErrNotRegular, fi.Mode().Type()))
	}
	return f, fi, nil
}

// ReadFile reads the regular file at p as the container sees it: symlinks
// are followed inside the root (absolute ones from the root, ".." stopping
// there), never out of it. A FIFO, device or directory is refused rather
// than opened, and more than limit bytes is a *limits.Error.
func (r *Root) ReadFile(p string, limit int64) ([]byte, error) {
	resolved, err := r.Resolve(p)
	if err != nil {
		return nil, err
	}
	f, _, err := r.OpenRegular(resolved)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return limits.ReadAll(f, limit, path.Join(r.dir, resolved))
}
