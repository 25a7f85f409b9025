package generate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	rootlesscontainers "github.com/rootless-containers/proto/go-proto"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/saferoot"
)

// meta is what a rootfs entry carries besides its content: the attributes
// a template keeps.
type meta struct {
	mode     uint32 // permission bits plus setuid, setgid and sticky
	uid, gid int
	mtime    time.Time
	xattrs   map[string]string
}

// keepXattr reports whether an xattr belongs in a rootfs nexcage writes:
// what PVE's extraction keeps (user.* and security.capability). The
// rootless bookkeeping xattr is nexcage's own to write.
func keepXattr(name string) bool {
	return name == "security.capability" || (strings.HasPrefix(name, "user.") && name != rootlesscontainers.Keyname)
}

// writer applies metadata to what it creates, as root (owners set with
// chown) or rootless (the caller owns everything; other owners go to the
// user.rootlesscontainers xattr, as umoci writes and convert reads).
type writer struct {
	root string
	// r is root opened: every lookup and directory the writer makes goes
	// through it, so what a template's symlinks point at cannot redirect
	// them out of the rootfs.
	r        *saferoot.Root
	rootless bool
	// dirs are applied last, deepest first: a directory's mode may forbid
	// writing into it, and creating entries changes its mtime.
	dirs map[string]meta
	// Counts of what could not be kept, for one warning each.
	skippedDevices int
	skippedXattrs  int
	lostOwners     int
	firstSkipped   string
	firstLostXattr string
	firstLostOwner string
	skippedSockets int
	skippedMounts  []string
	entries        int
	bytes          int64
}

// newWriter makes the directory root, 0700 until finishDirs gives it its
// mode, and a writer filling it; close releases it.
func newWriter(root string, rootless bool) (*writer, error) {
	if err := os.Mkdir(root, 0o700); err != nil {
		return nil, err
	}
	r, err := saferoot.Open(root)
	if err != nil {
		return nil, err
	}
	return &writer{root: root, r: r, rootless: rootless, dirs: map[string]meta{}}, nil
}

func (w *writer) close() { w.r.Close() }

// apply sets owner, xattrs, mode and times on a non-directory, in the only
// order that keeps them all: chown clears setuid bits and file
// capabilities, and a read-only mode forbids setting user.* xattrs to
// anyone but root.
func (w *writer) apply(rel string, m meta, symlink bool) error {
	p := filepath.Join(w.root, rel)
	if err := w.owner(p, rel, m, symlink); err != nil {
		return err
	}
	if err := w.setXattrs(p, rel, m.xattrs); err != nil {
		return err
	}
	if !symlink {
		if err := unix.Chmod(p, m.mode&0o7777); err != nil {
			return fmt.Errorf("%s: set mode %04o: %w", rel, m.mode&0o7777, err)
		}
	}
	return setTimes(p, rel, m.mtime)
}

// symlink makes the symlink rel -> target with m's owner, xattrs and
// time (a symlink has no mode of its own).
func (w *writer) symlink(rel, target string, m meta) error {
	if err := os.Symlink(target, filepath.Join(w.root, rel)); err != nil {
		return err
	}
	return w.apply(rel, m, true)
}

// special makes a device node (typ S_IFCHR or S_IFBLK, number dev) or a
// FIFO (S_IFIFO) at rel with m. A rootless writer cannot make device
// nodes: it counts them for one warning and goes on.
func (w *writer) special(rel string, typ uint32, dev uint64, m meta) error {
	p := filepath.Join(w.root, rel)
	if typ == unix.S_IFIFO {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return &os.PathError{Op: "mkfifo", Path: p, Err: err}
		}
		return w.apply(rel, m, false)
	}
	if w.rootless {
		w.entries--
		w.skippedDevices++
		if w.firstSkipped == "" {
			w.firstSkipped = rel
		}
		return nil
	}
	if err := unix.Mknod(p, typ|0o600, int(dev)); err != nil {
		return &os.PathError{Op: "mknod", Path: p, Err: err}
	}
	return w.apply(rel, m, false)
}

func (w *writer) owner(p, rel string, m meta, symlink bool) error {
	if !w.rootless {
		if err := unix.Lchown(p, m.uid, m.gid); err != nil {
			return fmt.Errorf("%s: set owner %d:%d: %w", rel, m.uid, m.gid, err)
		}
		return nil
	}
	if m.uid == 0 && m.gid == 0 {
		return nil
	}
	res := &rootlesscontainers.Resource{Uid: rootlesscontainers.NoopID, Gid: rootlesscontainers.NoopID}
	if m.uid != 0 {
		res.Uid = uint32(m.uid)
	}
	if m.gid != 0 {
		res.Gid = uint32(m.gid)
	}
	val, err := proto.Marshal(res)
	if err != nil {
		return err
	}
	if err := unix.Lsetxattr(p, rootlesscontainers.Keyname, val, 0); err != nil {
		if symlink && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP)) {
			// Linux allows no user.* xattrs on symlinks: as with umoci, a
			// symlink's owner is lost in a rootless rootfs.
			w.lostOwners++
			if w.firstLostOwner == "" {
				w.firstLostOwner = rel
			}
			return nil
		}
		return fmt.Errorf("%s: record owner %d:%d in %s: %w", rel, m.uid, m.gid, rootlesscontainers.Keyname, err)
	}
	return nil
}

func (w *writer) setXattrs(p, rel string, xattrs map[string]string) error {
	names := make([]string, 0, len(xattrs))
	for k := range xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		err := unix.Lsetxattr(p, k, []byte(xattrs[k]), 0)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
			// user.* on a symlink or device, or security.capability
			// without root: what PVE's tar skips too.
			w.skippedXattrs++
			if w.firstLostXattr == "" {
				w.firstLostXattr = rel + " (" + k + ")"
			}
			continue
		}
		return fmt.Errorf("%s: set xattr %s: %w", rel, k, err)
	}
	return nil
}

func setTimes(p, rel string, mtime time.Time) error {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if mtime.IsZero() {
		ts = unix.Timespec{}
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: set mtime: %w", rel, err)
	}
	return nil
}

// finishDirs applies the directories' metadata, deepest first, so that a
// read-only or non-searchable parent is made so after its children.
func (w *writer) finishDirs() error {
	paths := make([]string, 0, len(w.dirs))
	for p := range w.dirs {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		di, dj := depth(paths[i]), depth(paths[j])
		if di != dj {
			return di > dj
		}
		return paths[i] < paths[j]
	})
	lookup := saferoot.Lookup(w.r.Lookup)
	for _, rel := range paths {
		// Replaced by a later entry, or now reached through a symlink
		// (which the chmod would follow): not the directory recorded.
		if r, _, err := saferoot.Resolve(rel, lookup, saferoot.Options[string]{}); err != nil || r != rel {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(w.root, rel)); err != nil || !fi.IsDir() {
			continue
		}
		if err := w.apply(rel, w.dirs[rel], false); err != nil {
			return err
		}
	}
	return nil
}

func depth(rel string) int {
	if rel == "." {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// warnings says what could not be kept, once per kind.
func (w *writer) warnings() []string {
	var out []string
	if w.skippedDevices > 0 {
		out = append(out, fmt.Sprintf("%d device node(s) were not created (e.g. /%s): only root can create them; run as root to keep them (templates drop them anyway: PVE creates /dev itself)", w.skippedDevices, w.firstSkipped))
	}
	if w.skippedXattrs > 0 {
		out = append(out, fmt.Sprintf("%d xattr(s) could not be set (e.g. /%s): Linux allows no user.* xattrs on symlinks, and only root can set security.capability", w.skippedXattrs, w.firstLostXattr))
	}
	if w.lostOwners > 0 {
		out = append(out, fmt.Sprintf("%d symlink(s) owned by ids other than root lost their owner (e.g. /%s): Linux allows no user.* xattrs on symlinks, so a rootless rootfs cannot record it; run as root to keep them", w.lostOwners, w.firstLostOwner))
	}
	if w.skippedSockets > 0 {
		out = append(out, fmt.Sprintf("%d socket(s) were left out: a socket belongs to a running program, and a tar cannot hold one", w.skippedSockets))
	}
	if len(w.skippedMounts) > 0 {
		out = append(out, fmt.Sprintf("%d directory(ies) are mount points of other file systems and were copied empty (as PVE's tar --one-file-system does): /%s", len(w.skippedMounts), strings.Join(w.skippedMounts, ", /")))
	}
	return out
}

// ErrBundleExists means the bundle is a non-empty directory or not a
// directory (Bundle), or its config.json exists (Spec), and Force was not
// set. It is rootfs.ErrBundleExists too.
var ErrBundleExists = atomicfile.ErrExists
