package convert

import (
	"archive/tar"
	"errors"
	"fmt"
	"github.com/nexcage/nexcage/internal/xattrs"
	"github.com/nexcage/nexcage/tartree"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	rootlesscontainers "github.com/rootless-containers/proto/go-proto"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// keepXattr reports whether PVE's extraction keeps an xattr
// (--xattrs-include=user.* --xattrs-include=security.capability).
func keepXattr(name string) bool {
	return name == "security.capability" || (strings.HasPrefix(name, "user.") && name != rootlesscontainers.Keyname)
}

// IDMap translates on-disk owners back to container ids: a rootless bundle
// stores the caller's ids for root and the real owners in the
// user.rootlesscontainers xattr.
type IDMap struct {
	UIDs, GIDs []rspec.LinuxIDMapping
	// Rootless says user.rootlesscontainers holds the real owners.
	Rootless bool
}

func toContainer(id uint32, m []rspec.LinuxIDMapping) int {
	for _, e := range m {
		if id >= e.HostID && id < e.HostID+e.Size {
			return int(e.ContainerID + id - e.HostID)
		}
	}
	return int(id)
}

// TreeFromDir reads a rootfs directory. Nothing is read but metadata; file
// contents are opened when the template is written.
func TreeFromDir(root string, ids IDMap) (*tartree.Tree, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	t := tartree.New()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read the rootfs: %w", err)
		}
		rel, _ := filepath.Rel(root, p)
		n, err := nodeFromDisk(p, ids)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if n == nil {
			return nil // sockets and the like cannot go into a tar
		}
		t.Put(filepath.ToSlash(rel), n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func nodeFromDisk(p string, ids IDMap) (*tartree.Node, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, err
	}
	n := &tartree.Node{
		Mode:    int64(st.Mode & 0o7777),
		UID:     toContainer(st.Uid, ids.UIDs),
		GID:     toContainer(st.Gid, ids.GIDs),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		n.Type = tar.TypeDir
	case syscall.S_IFREG:
		n.Type = tar.TypeReg
		n.Size = st.Size
		if st.Nlink > 1 {
			n.Inode = st.Ino
		}
		n.Open = func() (io.ReadCloser, error) { return openForRead(p) }
	case syscall.S_IFLNK:
		n.Type = tar.TypeSymlink
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		n.Linkname = target
		n.Mode = 0o777
		if st.Nlink > 1 {
			n.Inode = st.Ino // GNU tar links hard-linked symlinks too
		}
	case syscall.S_IFCHR, syscall.S_IFBLK:
		n.Type = tar.TypeChar
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			n.Type = tar.TypeBlock
		}
		n.Devmajor, n.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case syscall.S_IFIFO:
		n.Type = tar.TypeFifo
	default:
		return nil, nil
	}
	attrs, err := xattrs.Read(p, func(name string) bool { return keepXattr(name) || name == rootlesscontainers.Keyname })
	if err != nil {
		return nil, err
	}
	for k, v := range attrs {
		if k == rootlesscontainers.Keyname && ids.Rootless {
			var res rootlesscontainers.Resource
			if err := proto.Unmarshal([]byte(v), &res); err != nil {
				return nil, fmt.Errorf("corrupt %s xattr: %w", k, err)
			}
			if res.Uid != rootlesscontainers.NoopID {
				n.UID = int(res.Uid)
			}
			if res.Gid != rootlesscontainers.NoopID {
				n.GID = int(res.Gid)
			}
			continue
		}
		if keepXattr(k) {
			if n.Xattrs == nil {
				n.Xattrs = map[string]string{}
			}
			n.Xattrs[k] = v
		}
	}
	return n, nil
}

// openForRead opens a file even when its mode denies reading to its owner,
// as happens in rootless bundles (the caller owns /etc/shadow 0000): the
// owner may add read permission for a moment and restore the mode.
func openForRead(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return f, err
	}
	fi, serr := os.Lstat(p)
	if serr != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
		return nil, err
	}
	if cerr := os.Chmod(p, fi.Mode().Perm()|0o400); cerr != nil {
		return nil, err
	}
	f, err = os.Open(p)
	os.Chmod(p, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	return f, err
}
