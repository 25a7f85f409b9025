package pct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/lxc"
)

// An image VOLUME becomes a new storage volume, whose root PVE formats
// owned by the CT's root (mkfs -E root_owner). So that an image whose
// process runs as another user can write its own data directory, the
// volume's root takes the owner and mode the image has at that path:
//
//   - pve-container 6.1.0 on (PVE 9.2): PVE's own keepattrs=1 on the mpN,
//     applied by the prestart hook at every start (mountpoint_insert_staged);
//   - before (PVE 9.0, 9.1), on the host: `pct mount VMID` (PVE::CLI::pct
//     mount: set_lock 'mounted', PVE::LXC::mount_all under
//     /var/lib/lxc/VMID/rootfs), the volume's root chowned and chmodded
//     from the directory it is mounted on, then `pct unmount VMID`;
//   - over the API (no pct mount) or on another node: a warning.
//
// The directory is read in the CT's rootfs as PVE unpacked it, so its
// owner is already shifted by the CT's idmap (1000 is 101000 in a default
// unprivileged CT): copying it is what keepattrs does.

// ownedVolume is a new volume whose root is given the image's owner and
// mode through pct mount.
type ownedVolume struct {
	Key  string `json:"key"`  // mpN
	Path string `json:"path"` // in the container
}

// planVolumeOwners decides, for each storage volume of an image VOLUME
// among mps, how its root gets the image's owner (keepattrs, or pct
// mount on the host), and returns what is planned through pct mount and
// the warnings for what cannot be done. local is a host where pct runs
// for the CT (not through the API, not another node).
func planVolumeOwners(mps []lxc.MountPoint, volumes []string, c lxc.PVEContainer, local bool) ([]ownedVolume, []string) {
	var own []ownedVolume
	var warnings []string
	for i, m := range mps {
		if m.IsBind() || !slices.Contains(volumes, m.Path) {
			continue
		}
		switch {
		case c.InitUser():
			mps[i].KeepAttrs = true
		case local:
			own = append(own, ownedVolume{Key: m.Key(), Path: m.Path})
		default:
			warnings = append(warnings, fmt.Sprintf("pve-container %s has no keepattrs (PVE 9.2), and pct mount, which gives a volume the image's owner before, runs only on the node holding the CT: %s's volume belongs to the container's root; a process of another user cannot write it until you chown it", c, m.Path))
		}
	}
	return own, warnings
}

func mountArgv(vmid int) []string   { return []string{"pct", "mount", strconv.Itoa(vmid)} }
func unmountArgv(vmid int) []string { return []string{"pct", "unmount", strconv.Itoa(vmid)} }

// ownArgvs are the commands of the pct mount route, or nil.
func ownArgvs(vmid int, own []ownedVolume) [][]string {
	if len(own) == 0 {
		return nil
	}
	return [][]string{mountArgv(vmid), unmountArgv(vmid)}
}

// ownCommands are ownArgvs for --dry-run, with what is done in between.
func ownCommands(vmid int, own []ownedVolume) []string {
	if len(own) == 0 {
		return nil
	}
	out := append([]string{ShellQuote(mountArgv(vmid))}, ownComments(vmid, own)...)
	return append(out, ShellQuote(unmountArgv(vmid)))
}

// ownComments say what is done while the CT is mounted.
func ownComments(vmid int, own []ownedVolume) []string {
	var out []string
	for _, o := range own {
		out = append(out, fmt.Sprintf("# in /var/lib/lxc/%d/rootfs, no symlink followed: the root of %s's new volume (%s) takes the owner and mode %s has in the image", vmid, o.Key, o.Path, o.Path))
	}
	return out
}

// firmTimeout bounds a command run with firmContext.
const firmTimeout = 5 * time.Minute

// firmContext is ctx without its cancellation, bounded by firmTimeout:
// for a command that, killed half-way, leaves the CT in a state only
// it undoes (pct mount's 'mounted' lock, a rootfs swap written but not
// reported).
func firmContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), firmTimeout)
}

// ownVolumes gives each volume of own the owner and mode of its path in
// the CT's rootfs through pct mount; record (when not nil) is told each
// command run. pct mount and pct unmount run with firmContext: an
// interrupt between them would leave PVE's 'mounted' lock, which refuses
// the destroy or config writes of a rollback. The CT is unmounted again
// whether the volumes were owned or not, unless pct mount was refused
// because someone else holds the CT's lock (their lock stays theirs).
// *mine (when not nil) is set while a 'mounted' lock on the CT may be
// nexcage's: a rollback then runs releaseMount first.
func (h *Host) ownVolumes(ctx context.Context, vmid int, own []ownedVolume, record func([]string), mine *bool) (err error) {
	if len(own) == 0 {
		return nil
	}
	ctx, cancel := firmContext(ctx)
	defer cancel()
	run := func(argv ...string) (string, error) {
		if record != nil {
			record(argv)
		}
		return h.run(ctx, argv...)
	}
	if l := mainValue(readConfigText(h, vmid), "lock"); l != "" {
		return newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d is locked (%s): it cannot be mounted to give its new volumes the image's owner", vmid, l), "wait for the operation holding it, or `pct unlock` it")
	}
	if mine == nil {
		mine = new(bool)
	}
	*mine = true
	_, mountErr := run(mountArgv(vmid)...)
	var pe *Error
	if mountErr != nil && errors.As(mountErr, &pe) && strings.Contains(pe.Raw, "CT is locked") {
		*mine = false
		return fmt.Errorf("mounting CT %d to give its new volumes the image's owner: %w", vmid, mountErr)
	}
	defer func() {
		if uerr := h.releaseMount(ctx, vmid, record); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	if mountErr != nil {
		return fmt.Errorf("mounting CT %d to give its new volumes the image's owner: %w", vmid, mountErr)
	}
	root := filepath.Join(h.Root, "var/lib/lxc", strconv.Itoa(vmid), "rootfs")
	text := readConfigText(h, vmid)
	for _, o := range own {
		vol, ok := volumeAt(text, o.Key, o.Path)
		var volPath string
		if !ok {
			err = fmt.Errorf("%s is not the volume planned at %s", o.Key, o.Path)
		} else if volPath, err = run("pvesm", "path", vol); err == nil {
			err = copyOwner(root, o.Path, strings.TrimSpace(volPath))
		}
		if err != nil {
			return newError(ErrFailed, "", fmt.Sprintf("CT %d's %s (%s): %v", vmid, o.Key, o.Path, err), "the image's VOLUME path must be a directory reached without a symlink; rebuild the image")
		}
	}
	return nil
}

// releaseMount runs pct unmount when CT vmid's config shows the
// 'mounted' lock (which pct mount sets, and leaves when it fails or is
// killed); the caller knows it ran pct mount itself.
func (h *Host) releaseMount(ctx context.Context, vmid int, record func([]string)) error {
	if mainValue(readConfigText(h, vmid), "lock") != "mounted" {
		return nil
	}
	ctx, cancel := firmContext(ctx)
	defer cancel()
	argv := unmountArgv(vmid)
	if record != nil {
		record(argv)
	}
	if _, err := h.run(ctx, argv...); err != nil {
		return fmt.Errorf("unmounting CT %d: %w (CT %d keeps PVE's 'mounted' lock: `pct unmount %d`)", vmid, err, vmid, vmid)
	}
	return nil
}

// volumeAt is the storage volume of mpN key in a config's main section
// when it is mounted at path (as nexcage wrote it), else false.
func volumeAt(text, key, path string) (string, bool) {
	val := mainValue(text, key)
	vol, _, _ := strings.Cut(val, ",")
	if val == "" || !strings.Contains(","+val+",", ",mp="+path+",") || strings.HasPrefix(vol, "/") || !strings.Contains(vol, ":") {
		return "", false
	}
	return vol, true
}

// copyOwner gives the root of the volume mounted at mp inside the
// mounted rootfs root the uid, gid and mode of the directory it is
// mounted on, as keepattrs does. Both are reached from root's descriptor
// with the kernel refusing any symlink and any "..": mp comes from an
// image, and what the image holds at it was written by whoever made it.
// What is reached at mp must be the root of the volume whose storage
// path (pvesm path) is volPath, not merely some mount root: PVE mounts
// by key, so another mount point at the same path (a bind mount of a
// host directory, say) may lie on top of it.
func copyOwner(root, mp, volPath string) error {
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" {
		return fmt.Errorf("%q is not a clean absolute path below /", mp)
	}
	rel := mp[1:]
	// The image's directory lies under the mount: a clone of the rootfs's
	// mount alone (not recursive, so without the mount points on it)
	// shows it, and is dissolved when its descriptor closes.
	tree, err := unix.OpenTree(unix.AT_FDCWD, root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cloning the rootfs mount %s: %w", root, err)
	}
	defer unix.Close(tree)
	src, err := openBeneath(fmt.Sprintf("/proc/self/fd/%d", tree), rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("the image's %s: %w", mp, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(int(src.Fd()), &st)
	src.Close()
	if err != nil {
		return err
	}

	dst, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("the volume at %s: %w", mp, err)
	}
	defer dst.Close()
	fd := int(dst.Fd())
	if err := isVolumeRoot(fd, volPath); err != nil {
		return fmt.Errorf("%s: %w", mp, err)
	}
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("failed to propagate uid and gid to the volume: %w", err)
	}
	// After the chown, which clears setuid and setgid bits.
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return fmt.Errorf("failed to propagate the access mode to the volume: %w", err)
	}
	return nil
}

// isVolumeRoot checks that the directory fd is the root of a mount of
// the volume at volPath: the directory itself (a subvol: directory and
// ZFS storages), the file system on the block device (LVM, RBD), or the
// file system on the loop device whose backing file it is (a raw image).
// Anything else, or a kernel that cannot say whether fd is a mount root,
// is refused.
func isVolumeRoot(fd int, volPath string) error {
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &sx); err != nil {
		return err
	}
	if sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return errors.New("the kernel does not tell whether it is a mount root (Linux 5.8 on does)")
	}
	if sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return errors.New("no volume is mounted there")
	}
	dev := unix.Mkdev(sx.Dev_major, sx.Dev_minor)
	var vs unix.Stat_t
	if err := unix.Stat(volPath, &vs); err != nil {
		return fmt.Errorf("the volume's storage path: %w", err)
	}
	ok := false
	switch vs.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		ok = dev == vs.Dev && sx.Ino == vs.Ino
	case unix.S_IFBLK:
		ok = dev == vs.Rdev
	case unix.S_IFREG:
		b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", sx.Dev_major, sx.Dev_minor))
		var bs unix.Stat_t
		ok = err == nil && unix.Stat(strings.TrimSuffix(string(b), "\n"), &bs) == nil && bs.Dev == vs.Dev && bs.Ino == vs.Ino
	}
	if !ok {
		return fmt.Errorf("what is mounted there is not the new volume (%s)", volPath)
	}
	return nil
}

// openBeneath opens rel below the directory root, no symlink followed
// (saferoot.Root.OpenFile).
func openBeneath(root, rel string, flags int) (*os.File, error) {
	r, err := saferoot.Open(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.OpenFile(rel, flags)
}

// newVolumes are the storage volumes an upgrade makes for the VOLUMEs
// only the new image has (existing volumes are left as they are).
type newVolumes struct {
	add []lxc.MountPoint // STORAGE:SIZE volumes, keepattrs=1 on 6.1.0 on
	own []ownedVolume    // before 6.1.0: owned through pct mount
}

// planNewVolumes plans an mpN for each VOLUME of the new image t that
// the old image (oldT; nil when unknown) did not have and that the CT
// does not mount already (paths compared cleaned: PVE keeps `mp=/data/`
// as written): on the storage of the CT's image volumes (else its
// rootfs's), as large as the first of them (else deploy's 8 GiB), owned
// as in the image by keepattrs on pve-container 6.1.0 on (which PVE's
// prestart hook applies at every start, also to an mpN added to an
// existing CT), by pct mount before on a host where pct runs (local),
// else with a warning. A new VOLUME below or above a bind mount is
// refused: PVE mounts by key, not by path, so the new volume's directory
// would be made in the host directory, or the volume would hide it.
func (p *UpgradePlan) planNewVolumes(text string, cur *lxc.Config, oldT, t *Template, cv lxc.PVEContainer, local bool) error {
	imageVols := t.Volumes
	if oldT != nil {
		imageVols = oldT.Volumes
	}
	storage, size, found := p.storage, "8", false
	used := map[int]bool{}
	var mounted, binds []string
	for _, m := range cur.MountPoints {
		used[m.Index] = true
		mounted = append(mounted, path.Clean(m.Path))
		if m.IsBind() {
			binds = append(binds, path.Clean(m.Path))
		}
		if m.IsBind() || !slices.Contains(imageVols, m.Path) || found {
			continue
		}
		if s, _, ok := strings.Cut(m.Volume, ":"); ok {
			storage, found = s, true
			for _, f := range strings.Split(mainValue(text, m.Key()), ",")[1:] {
				if v, ok := strings.CutPrefix(f, "size="); ok {
					size = gib(v)
				}
			}
		}
	}
	var oldVols, vols []string
	if oldT != nil {
		for _, v := range oldT.Volumes {
			oldVols = append(oldVols, path.Clean(v))
		}
	}
	next := 0
	for _, raw := range t.Volumes {
		v, err := lxc.CheckContainerPath(raw)
		if err != nil {
			return newError(ErrInvalidArgument, "template", "the new template's image volume "+err.Error(), "rebuild it from an image whose VOLUMEs are absolute, clean paths")
		}
		vols = append(vols, v)
		if slices.Contains(mounted, v) || slices.Contains(oldVols, v) || slices.Contains(p.NewVolumes, v) {
			continue
		}
		for _, b := range binds {
			if pathWithin(v, b) || pathWithin(b, v) {
				return newError(ErrInvalidArgument, "mount", fmt.Sprintf("the new image's volume %s is nested with CT %d's bind mount at %s: PVE mounts by key, so the volume's directory would be made in the host directory, or the volume would hide it", v, p.VMID, b), "move the bind mount, or rebuild the image without that VOLUME")
			}
		}
		for next < 256 && used[next] {
			next++
		}
		if next == 256 {
			return newError(ErrInvalidArgument, "mount", fmt.Sprintf("CT %d has no free mpN for the new image's volume %s", p.VMID, v), "remove a mount point")
		}
		used[next] = true
		p.vols.add = append(p.vols.add, lxc.MountPoint{Index: next, Volume: storage + ":" + size, Path: v})
		p.NewVolumes = append(p.NewVolumes, v)
	}
	var warnings []string
	p.vols.own, warnings = planVolumeOwners(p.vols.add, vols, cv, local)
	p.Warnings = append(p.Warnings, warnings...)
	return nil
}

// pathWithin reports whether the clean path a is b or below it.
func pathWithin(a, b string) bool {
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/")
}

// mainValue is key's value in a config's main section, or "".
func mainValue(text, key string) string {
	main, _ := splitMainSection(text)
	for _, l := range strings.Split(main, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// newVolumeArgvs are the upgrade's commands that add the new volumes.
func (p *UpgradePlan) newVolumeArgvs() [][]string {
	if len(p.vols.add) == 0 {
		return nil
	}
	set := []string{"pct", "set", p.vmid()}
	set = append(set, mountOptions(p.vols.add)...)
	return append([][]string{set}, ownArgvs(p.VMID, p.vols.own)...)
}

// addNewVolumes runs newVolumeArgvs through run, record told of each
// command that ownVolumes runs (mine: see ownVolumes).
func (h *Host) addNewVolumes(ctx context.Context, p *UpgradePlan, run func(...string) error, record func([]string), mine *bool) error {
	if len(p.vols.add) == 0 {
		return nil
	}
	if err := run(p.newVolumeArgvs()[0]...); err != nil {
		return err
	}
	return h.ownVolumes(ctx, p.VMID, p.vols.own, record, mine)
}

// removeNewVolumes frees the volumes addNewVolumes made, as PVE frees a
// mount point's volume: `pct set --delete mpN` leaves it as an unusedM,
// `pct set --delete unusedM` frees it. Only an mpN that names the path
// planned is touched.
func (h *Host) removeNewVolumes(ctx context.Context, p *UpgradePlan) error {
	var errs []error
	for _, m := range p.vols.add {
		vol, ok := volumeAt(readConfigText(h, p.VMID), m.Key(), m.Path)
		if !ok {
			continue
		}
		if _, err := h.run(ctx, "pct", "set", p.vmid(), "--delete", m.Key()); err != nil {
			errs = append(errs, fmt.Errorf("removing the new volume %s (%s): %w", m.Key(), vol, err))
			continue
		}
		text := readConfigText(h, p.VMID)
		for i := 0; i < 256; i++ {
			k := "unused" + strconv.Itoa(i)
			if mainValue(text, k) != vol {
				continue
			}
			if _, err := h.run(ctx, "pct", "set", p.vmid(), "--delete", k); err != nil {
				errs = append(errs, fmt.Errorf("freeing the new volume %s (%s): %w", vol, k, err))
			}
			break
		}
	}
	return errors.Join(errs...)
}

func readConfigText(h *Host, vmid int) string {
	b, _ := os.ReadFile(h.configPath(vmid, ""))
	return string(b)
}
