package pct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

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

// ownVolumes gives each volume of own the owner and mode of its path in
// the CT's rootfs through pct mount. The CT is unmounted again whatever
// happens: a failed pct mount leaves PVE's 'mounted' lock, which only pct
// unmount removes and which would refuse the destroy of a rollback.
func (h *Host) ownVolumes(ctx context.Context, vmid int, own []ownedVolume, run func(...string) error) (err error) {
	if len(own) == 0 {
		return nil
	}
	if run == nil {
		run = func(argv ...string) error { _, err := h.run(ctx, argv...); return err }
	}
	mountErr := run(mountArgv(vmid)...)
	defer func() {
		if uerr := run(unmountArgv(vmid)...); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmounting CT %d: %w (CT %d keeps PVE's 'mounted' lock: `pct unmount %d`)", vmid, uerr, vmid, vmid))
		}
	}()
	if mountErr != nil {
		return fmt.Errorf("mounting CT %d to give its new volumes the image's owner: %w", vmid, mountErr)
	}
	root := filepath.Join(h.Root, "var/lib/lxc", strconv.Itoa(vmid), "rootfs")
	for _, o := range own {
		if err := copyOwner(root, o.Path); err != nil {
			return newError(ErrFailed, "", fmt.Sprintf("CT %d's %s (%s): %v", vmid, o.Key, o.Path, err), "the image's VOLUME path must be a directory reached without a symlink; rebuild the image")
		}
	}
	return nil
}

// copyOwner gives the root of the volume mounted at mp inside the
// mounted rootfs root the uid, gid and mode of the directory it is
// mounted on, as keepattrs does. Both are reached from root's descriptor
// with the kernel refusing any symlink and any "..": mp comes from an
// image, and what the image holds at it was written by whoever made it.
func copyOwner(root, mp string) error {
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
	// Only the volume's root: were it not mounted, this would be the
	// image's own directory, or worse.
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &sx); err != nil {
		return err
	}
	if sx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && sx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return fmt.Errorf("no volume is mounted at %s", mp)
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
// does not mount already: on the storage of the CT's image volumes (else
// its rootfs's), as large as the first of them (else deploy's 8 GiB),
// owned as in the image by keepattrs on pve-container 6.1.0 on (which
// PVE's prestart hook applies at every start, also to an mpN added to an
// existing CT), by pct mount before on a host where pct runs (local),
// else with a warning.
func (p *UpgradePlan) planNewVolumes(text string, cur *lxc.Config, oldT, t *Template, cv lxc.PVEContainer, local bool) error {
	imageVols := t.Volumes
	if oldT != nil {
		imageVols = oldT.Volumes
	}
	storage, size, found := p.storage, "8", false
	used := map[int]bool{}
	var mounted []string
	for _, m := range cur.MountPoints {
		used[m.Index] = true
		mounted = append(mounted, m.Path)
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
	next := 0
	for _, v := range t.Volumes {
		if _, err := lxc.CheckContainerPath(v); err != nil {
			return newError(ErrInvalidArgument, "template", "the new template's image volume "+err.Error(), "rebuild it from an image whose VOLUMEs are absolute, clean paths")
		}
		if slices.Contains(mounted, v) || (oldT != nil && slices.Contains(oldT.Volumes, v)) {
			continue
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
	p.vols.own, warnings = planVolumeOwners(p.vols.add, t.Volumes, cv, local)
	p.Warnings = append(p.Warnings, warnings...)
	return nil
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

// addNewVolumes runs newVolumeArgvs through run (which records them).
func (h *Host) addNewVolumes(ctx context.Context, p *UpgradePlan, run func(...string) error) error {
	if len(p.vols.add) == 0 {
		return nil
	}
	if err := run(p.newVolumeArgvs()[0]...); err != nil {
		return err
	}
	return h.ownVolumes(ctx, p.VMID, p.vols.own, run)
}

// removeNewVolumes frees the volumes addNewVolumes made, as PVE frees a
// mount point's volume: `pct set --delete mpN` leaves it as an unusedM,
// `pct set --delete unusedM` frees it. Only an mpN that names the path
// planned is touched.
func (h *Host) removeNewVolumes(ctx context.Context, p *UpgradePlan) error {
	var errs []error
	for _, m := range p.vols.add {
		val := mainValue(readConfigText(h, p.VMID), m.Key())
		vol, _, _ := strings.Cut(val, ",")
		if val == "" || !strings.Contains(","+val+",", ",mp="+m.Path+",") || strings.HasPrefix(vol, "/") {
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
