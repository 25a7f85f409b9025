package main

// pct mount / pct unmount: PVE::CLI::pct's mount and unmount (the same
// code in pve-container 6.0.9, 6.0.18 and 6.1.x): under the config lock,
// set_lock 'mounted' and PVE::LXC::mount_all, which mounts the rootfs at
// /var/lib/lxc/VMID/rootfs and every mount point inside it, each path
// walked without following a symlink (walk_tree_nofollow, missing
// directories made and owned by the CT's root); unmount is umount_all in
// reverse and remove_lock 'mounted'. Storage volumes are directories here,
// so every mount is a bind mount.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/pvetest"
)

func pctMount(h *Host, args []string) error {
	return pctVMIDCommand(h, args, "pct mount <vmid>", nil, func(vmid int, _ *cliArgs) error {
		// set_lock: a locked CT (a backup, another mount) is refused.
		conf, unlock, err := h.lockedConfig(vmid, true)
		if err != nil {
			return err
		}
		defer unlock()
		conf.keys["lock"] = "mounted"
		if err := h.writeConfig(h.Node, vmid, conf); err != nil {
			return err
		}
		// A failed mount_all leaves the lock: pct unmount removes it.
		if err := h.mountAll(vmid, conf); err != nil {
			return err
		}
		fmt.Printf("mounted CT %d in '/var/lib/lxc/%d/rootfs'\n", vmid, vmid)
		return nil
	})
}

func pctUnmount(h *Host, args []string) error {
	return pctVMIDCommand(h, args, "pct unmount <vmid>", nil, func(vmid int, _ *cliArgs) error {
		conf, unlock, err := h.lockedConfig(vmid, false)
		if err != nil {
			return err
		}
		defer unlock()
		if err := h.umountAll(vmid, conf, false); err != nil {
			return err
		}
		// remove_lock 'mounted'.
		switch l := conf.keys["lock"]; l {
		case "":
			return errors.New("no lock found trying to remove 'mounted' lock")
		case "mounted":
		default:
			return fmt.Errorf("found lock '%s' trying to remove 'mounted' lock", l)
		}
		delete(conf.keys, "lock")
		return h.writeConfig(h.Node, vmid, conf)
	})
}

// lockedConfig takes CT vmid's config lock and loads its config, refused
// when the CT is locked and checkLocked says so; the caller unlocks.
func (h *Host) lockedConfig(vmid int, checkLocked bool) (*ctConf, func(), error) {
	unlock, err := h.lockConfig(vmid)
	if err != nil {
		return nil, nil, err
	}
	conf, err := h.loadConfig(vmid)
	if err == nil && checkLocked {
		err = checkLock(conf)
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return conf, unlock, nil
}

// volumeKeys are valid_volume_keys that the config has: rootfs, then mp0
// to mp255 in key order.
func volumeKeys(conf *ctConf) []string {
	keys := []string{}
	if _, ok := conf.keys["rootfs"]; ok {
		keys = append(keys, "rootfs")
	}
	for i := 0; i < 256; i++ {
		if _, ok := conf.keys["mp"+strconv.Itoa(i)]; ok {
			keys = append(keys, "mp"+strconv.Itoa(i))
		}
	}
	return keys
}

// mountAll is PVE::LXC::mount_all: on failure what was mounted is
// unmounted again (umount_all with noerr) and the error returned.
func (h *Host) mountAll(vmid int, conf *ctConf) error {
	rootdir := h.rootfsDir(vmid)
	if err := os.MkdirAll(rootdir, 0o755); err != nil {
		return err
	}
	rootUID := 0
	if conf.keys["unprivileged"] == "1" {
		rootUID = pvetest.IDMapBase
	}
	for _, key := range volumeKeys(conf) {
		m := parseMP(conf.keys[key])
		mp := m.get("mp")
		if key == "rootfs" {
			mp = "/"
		}
		// parse_volume's verify_lxc_mp_string: pct set refuses such a
		// path, a hand-written config may still hold one.
		err := mpPath(mp)
		if err == nil {
			err = h.mountpointMount(m, mp, rootdir, rootUID)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mounting container failed")
			h.umountAll(vmid, conf, true)
			return err
		}
	}
	return nil
}

// mountpointMount is __mountpoint_mount for a volume (a directory here)
// or a bind mount: the target walked from rootdir without following a
// symlink, then bind-mounted through the walked directory's descriptor,
// so that nothing swapped in meanwhile redirects it.
func (h *Host) mountpointMount(m mpValue, mp, rootdir string, rootUID int) error {
	var src string
	switch mpType(m.Volume) {
	case "volume":
		dir, err := h.volumeDir(m.Volume)
		if err != nil {
			return err
		}
		src = dir
	case "bind":
		if fi, err := os.Stat(m.Volume); err != nil || !fi.IsDir() {
			return fmt.Errorf("directory '%s' does not exist", m.Volume)
		}
		src = m.Volume
	default:
		return errors.New("unsupported storage")
	}
	fd, err := walkTreeNofollow(rootdir, mp, rootUID)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// A detached (non-recursive) bind of src, made read-only before it
	// is attached at the walked directory: nothing is resolved by path
	// after the walk.
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("mount %s on %s failed: %v", src, filepath.Join(rootdir, mp), err)
	}
	defer unix.Close(tree)
	if m.get("ro") == "1" {
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return fmt.Errorf("mount %s read-only failed: %v", src, err)
		}
	}
	if err := unix.MoveMount(tree, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount %s on %s failed: %v", src, filepath.Join(rootdir, mp), err)
	}
	return nil
}

// walkTreeNofollow is walk_tree_nofollow with mkdir: each component
// opened O_NOFOLLOW|O_DIRECTORY, a missing one made 0755 and given to the
// CT's root; a symlink (or a file) on the way is PVE's "symlink
// encountered".
func walkTreeNofollow(start, subdir string, rootUID int) (int, error) {
	fd, err := unix.Open(start, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("failed to open start directory %s: %v", start, err)
	}
	dir := start
	for _, c := range strings.Split(subdir, "/") {
		if c == "" {
			continue
		}
		if c == "." || c == ".." {
			// Openat(fd, "..") is no symlink, yet leaves start.
			unix.Close(fd)
			return -1, fmt.Errorf("%s contains illegal character sequences", subdir)
		}
		dir += "/" + c
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				unix.Close(fd)
				return -1, fmt.Errorf("symlink encountered at: %s", dir)
			}
			unix.Mkdirat(fd, c, 0o755)
			if next, err = unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("failed to create path: %s: %v", dir, err)
			}
			unix.Fchownat(next, "", rootUID, rootUID, unix.AT_EMPTY_PATH)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

// umountAll is PVE::LXC::umount_all: the volumes in reverse key order,
// each unmounted if its path is a mount point now.
func (h *Host) umountAll(vmid int, conf *ctConf, noerr bool) error {
	rootdir := h.rootfsDir(vmid)
	keys := volumeKeys(conf)
	var errs []error
	for i := len(keys) - 1; i >= 0; i-- {
		m := parseMP(conf.keys[keys[i]])
		mp := m.get("mp")
		if keys[i] == "rootfs" {
			mp = "/"
		}
		if m.Volume == "" || mp == "" || mpPath(mp) != nil {
			continue
		}
		p := filepath.Clean(rootdir + "/" + mp)
		if !isMounted(p) {
			continue
		}
		if err := unix.Unmount(p, unix.UMOUNT_NOFOLLOW); err != nil {
			err = fmt.Errorf("command 'umount -d %s' failed: %v", p, err)
			if !noerr {
				return err
			}
			fmt.Fprintln(os.Stderr, err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isMounted is PVE::ProcFSTools::is_mounted: a mount point in
// /proc/mounts (octal escapes decoded).
func isMounted(p string) bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && unescapeMount(fields[1]) == p {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
