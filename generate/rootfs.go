package generate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	rootlesscontainers "github.com/rootless-containers/proto/go-proto"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/nexcage/nexcage/internal/xattrs"
	"github.com/nexcage/nexcage/progress"
)

// copyTree copies the directory src into w.root with every attribute a
// template keeps: type, mode (setuid, setgid, sticky), owner, mtime to the
// nanosecond, user.* and security.capability xattrs, hard links, symlinks,
// device nodes and fifos. Like PVE's tar (--one-file-system) it does not
// descend into other file systems mounted below src.
func (w *writer) copyTree(ctx context.Context, src string, rep progress.Reporter) error {
	var rootDev uint64
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return err
	}
	rootDev = st.Dev
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	uid, gid := os.Geteuid(), os.Getegid()
	bar := rep.Bytes("copying "+src, 0)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read the rootfs: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("read the rootfs: %w", err)
		}
		m, err := w.sourceMeta(p, &st, uid, gid)
		if err != nil {
			return err
		}
		dst := filepath.Join(w.root, rel)
		if rel == "." {
			w.dirs["."] = m
			w.entries++
			return nil
		}
		w.entries++
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
			w.dirs[rel] = m
			if st.Dev != rootDev {
				w.skippedMounts = append(w.skippedMounts, rel)
				return filepath.SkipDir
			}
			return nil
		case unix.S_IFREG:
			if st.Nlink > 1 {
				key := inode{st.Dev, st.Ino}
				if first, ok := links[key]; ok {
					return os.Link(filepath.Join(w.root, first), dst)
				}
				links[key] = rel
			}
			n, err := copyFile(p, dst)
			if err != nil {
				return err
			}
			w.bytes += n
			bar.Add(int(n))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return w.symlink(rel, target, m)
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			return w.special(rel, st.Mode&unix.S_IFMT, st.Rdev, m)
		default:
			w.entries--
			w.skippedSockets++
			return nil
		}
		return w.apply(rel, m, false)
	})
	if err != nil {
		bar.Done("failed")
		return err
	}
	bar.Done(fmt.Sprintf("%d entries", w.entries))
	return nil
}

// sourceMeta is what a template keeps of the file p of a rootfs: mode,
// owner, mtime and xattrs. In a rootless copy the caller's ids (uid, gid)
// stand for root, and an owner an earlier rootless unpack recorded in
// user.rootlesscontainers is the real one.
func (w *writer) sourceMeta(p string, st *unix.Stat_t, uid, gid int) (meta, error) {
	m := meta{
		mode:  st.Mode & 0o7777,
		uid:   int(st.Uid),
		gid:   int(st.Gid),
		mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
	}
	keep := keepXattr
	if w.rootless {
		keep = func(n string) bool { return keepXattr(n) || n == rootlesscontainers.Keyname }
	}
	attrs, err := xattrs.Read(p, keep)
	if err != nil {
		return m, fmt.Errorf("%s: %w", p, err)
	}
	m.xattrs = attrs
	if !w.rootless {
		return m, nil
	}
	if m.uid == uid {
		m.uid = 0
	}
	if m.gid == gid {
		m.gid = 0
	}
	if v, ok := attrs[rootlesscontainers.Keyname]; ok {
		var res rootlesscontainers.Resource
		if proto.Unmarshal([]byte(v), &res) == nil {
			if res.Uid != rootlesscontainers.NoopID {
				m.uid = int(res.Uid)
			}
			if res.Gid != rootlesscontainers.NoopID {
				m.gid = int(res.Gid)
			}
		}
		delete(m.xattrs, rootlesscontainers.Keyname)
	}
	return m, nil
}

func copyFile(src, dst string) (int64, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return 0, fmt.Errorf("cannot read %s: %w: run as root to copy a rootfs with files other users own", src, err)
		}
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	// *os.File to *os.File: copy_file_range where the kernel can.
	n, err := out.ReadFrom(in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copy %s: %w", src, err)
	}
	return n, nil
}
