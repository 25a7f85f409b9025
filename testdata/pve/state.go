package main

// The host's state: everything a PVE node keeps in /etc/pve, /run/lock and
// /var/lib, mirrored under $NEXCAGE_PVE_ROOT.

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/nexcage/nexcage/lxc"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/pvetest"
)

// Host is the simulated PVE host this invocation runs on.
type Host struct {
	Root    string  // $NEXCAGE_PVE_ROOT
	Node    string  // the local node's name ($PVE_NODE, default pve)
	Version version // $PVE_VERSION, default 9.1.2
}

func newHost() (*Host, error) {
	root := os.Getenv("NEXCAGE_PVE_ROOT")
	if root == "" {
		return nil, errors.New("NEXCAGE_PVE_ROOT is not set: the PVE stand-in keeps its host state under that directory")
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("NEXCAGE_PVE_ROOT=%q must be an absolute path", root)
	}
	node := os.Getenv("PVE_NODE")
	if node == "" {
		node = "pve"
	}
	vs := os.Getenv("PVE_VERSION")
	if vs == "" {
		vs = "9.1.2"
	}
	v, err := parseVersion(vs)
	if err != nil {
		return nil, err
	}
	return &Host{Root: root, Node: node, Version: v}, nil
}

// path joins a host-absolute path ("/etc/pve/...") onto the root.
func (h *Host) path(elem ...string) string {
	return filepath.Join(append([]string{h.Root}, elem...)...)
}

// version is a pve-manager version.
type version struct {
	major, minor, patch int
	raw                 string
}

func parseVersion(s string) (version, error) {
	m := regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?$`).FindStringSubmatch(s)
	if m == nil {
		return version{}, fmt.Errorf("PVE_VERSION=%q is not a pve-manager version like 9.1.2", s)
	}
	v := version{raw: s}
	v.major, _ = strconv.Atoi(m[1])
	v.minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

func (v version) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

// appContainers reports whether this PVE has the application container
// features of 9.1: --entrypoint, --env, host-managed networks, plain .tar
// templates.
func (v version) appContainers() bool { return v.atLeast(9, 1) }

// containerVersion is a plausible pve-container package version for the
// pve-manager version.
func (v version) containerVersion() string {
	switch {
	case v.atLeast(9, 2):
		return "6.1.10"
	case v.atLeast(9, 1):
		return "6.0.18"
	case v.major >= 9:
		return "6.0.9"
	default:
		return "5.3.3"
	}
}

// container is containerVersion as the release lxc.ParseFor judges by.
func (v version) container() lxc.PVEContainer {
	c, _ := lxc.ParsePVEContainer(v.containerVersion())
	return c
}

// ---- cluster ----

// nodes are the cluster's members: the directories under /etc/pve/nodes.
func (h *Host) nodes() ([]string, error) {
	ents, err := os.ReadDir(h.path("etc/pve/nodes"))
	if err != nil {
		return nil, fmt.Errorf("cluster file system: %v", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (h *Host) nodeExists(node string) bool {
	st, err := os.Stat(h.path("etc/pve/nodes", node))
	return err == nil && st.IsDir() && !strings.ContainsAny(node, "/.")
}

// Guest is a CT or VM config found somewhere in the cluster.
type Guest struct {
	VMID int
	Node string
	Type string // "lxc" or "qemu"
}

// guestDirs maps config directory names to guest types, as pmxcfs lays
// them out under each node.
var guestDirs = map[string]string{"lxc": "lxc", "qemu-server": "qemu"}

// guests lists every guest on every node, sorted by vmid.
func (h *Host) guests() ([]Guest, error) {
	nodes, err := h.nodes()
	if err != nil {
		return nil, err
	}
	var out []Guest
	for _, n := range nodes {
		for dir, typ := range guestDirs {
			ents, err := os.ReadDir(h.path("etc/pve/nodes", n, dir))
			if err != nil {
				continue
			}
			for _, e := range ents {
				id, ok := strings.CutSuffix(e.Name(), ".conf")
				if !ok {
					continue
				}
				vmid, err := strconv.Atoi(id)
				if err != nil || strconv.Itoa(vmid) != id {
					continue
				}
				out = append(out, Guest{VMID: vmid, Node: n, Type: typ})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out, nil
}

// findGuest looks a VMID up cluster-wide: VMIDs are unique across nodes.
func (h *Host) findGuest(vmid int) (Guest, bool, error) {
	gs, err := h.guests()
	if err != nil {
		return Guest{}, false, err
	}
	for _, g := range gs {
		if g.VMID == vmid {
			return g, true, nil
		}
	}
	return Guest{}, false, nil
}

// checkVMIDUnused is PVE::Cluster::check_vmid_unused.
func (h *Host) checkVMIDUnused(vmid int) error {
	g, found, err := h.findGuest(vmid)
	if err != nil {
		return err
	}
	if found {
		kind := "CT"
		if g.Type == "qemu" {
			kind = "VM"
		}
		return fmt.Errorf("%s %d already exists on node '%s'", kind, vmid, g.Node)
	}
	return nil
}

// ---- CT configs ----

func (h *Host) configPath(node string, vmid int) string {
	return h.path("etc/pve/nodes", node, "lxc", strconv.Itoa(vmid)+".conf")
}

// errNoConfig is PVE's message for a CT that is not on this node.
func (h *Host) errNoConfig(node string, vmid int) error {
	return fmt.Errorf("Configuration file 'nodes/%s/lxc/%d.conf' does not exist", node, vmid)
}

// loadConfig reads a CT config of the local node, as `pct` only manages
// local containers.
func (h *Host) loadConfig(vmid int) (*ctConf, error) {
	return h.loadConfigOn(h.Node, vmid)
}

func (h *Host) loadConfigOn(node string, vmid int) (*ctConf, error) {
	b, err := os.ReadFile(h.configPath(node, vmid))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, h.errNoConfig(node, vmid)
	}
	if err != nil {
		return nil, err
	}
	return parseCTConf(string(b)), nil
}

// writeConfig replaces a CT config atomically (pmxcfs never shows a
// half-written file). Callers hold the config lock.
func (h *Host) writeConfig(node string, vmid int, c *ctConf) error {
	p := h.configPath(node, vmid)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp.%d", p, os.Getpid())
	if err := os.WriteFile(tmp, []byte(c.render()), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// ---- locks ----

// lockTimeout is PVE's default for lock_config.
const lockTimeout = 10 * time.Second

// lockConfig takes PVE's per-CT config lock, an exclusive flock on
// /run/lock/lxc/pve-config-<vmid>.lock. Everyone who read-modify-writes a
// CT config (PVE, and nexcage adding raw lxc.* lines) takes it first.
func (h *Host) lockConfig(vmid int) (unlock func(), err error) {
	dir := h.path("run/lock/lxc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, fmt.Sprintf("pve-config-%d.lock", vmid))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("can't lock file '%s' - %v", p, err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("can't lock file '%s' - %v", p, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("can't lock file '%s' - got timeout", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- containers ----

func (h *Host) lxcPath() string { return h.path("var/lib/lxc") }

func (h *Host) ctDir(vmid int) string { return filepath.Join(h.lxcPath(), strconv.Itoa(vmid)) }

func (h *Host) rootfsDir(vmid int) string { return filepath.Join(h.ctDir(vmid), "rootfs") }

func (h *Host) container(vmid int) *pvetest.Container {
	return &pvetest.Container{LXCPath: h.lxcPath(), Name: strconv.Itoa(vmid)}
}

// running asks LXC whether the CT runs (PVE::LXC::check_running). Every
// container of the simulated cluster runs on this machine.
func (h *Host) running(vmid int) bool {
	if _, err := os.Stat(filepath.Join(h.ctDir(vmid), "config")); err != nil {
		return false
	}
	return h.container(vmid).State(context.Background()) == "RUNNING"
}

func (h *Host) status(vmid int) string {
	if h.running(vmid) {
		return "running"
	}
	return "stopped"
}

// ---- storage ----

// Storage is one section of storage.cfg.
type Storage struct {
	ID, Type string
	Props    [][2]string // properties in file order, except disable
	Path     string      // directory storages only
	Content  []string
	Disabled bool
	Shared   bool     // the same storage on every node (shared 1)
	Nodes    []string // empty: every node
}

// defaultContent is what a storage holds when storage.cfg does not say.
var defaultContent = []string{"images", "rootdir"}

// storages parses storage.cfg: "type: id" headers followed by indented
// "key value" lines; a key alone ("disable") is a flag.
func (h *Host) storages() ([]*Storage, error) {
	f, err := os.Open(h.path("etc/pve/storage.cfg"))
	if err != nil {
		return nil, fmt.Errorf("unable to read storage configuration: %v", err)
	}
	defer f.Close()
	var out []*Storage
	var cur *Storage
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			typ, id, ok := strings.Cut(trimmed, ":")
			if !ok {
				return nil, fmt.Errorf("storage.cfg line %d: syntax error: %q", n, line)
			}
			cur = &Storage{ID: strings.TrimSpace(id), Type: strings.TrimSpace(typ), Content: defaultContent}
			out = append(out, cur)
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("storage.cfg line %d: property outside a section", n)
		}
		k, v, _ := strings.Cut(trimmed, " ")
		v = strings.TrimSpace(v)
		switch k {
		case "disable":
			cur.Disabled = v == "" || v == "1"
			continue
		case "path":
			cur.Path = v
		case "content":
			cur.Content = splitList(v)
		case "nodes":
			cur.Nodes = splitList(v)
		case "shared":
			cur.Shared = v == "1"
		}
		cur.Props = append(cur.Props, [2]string{k, v})
	}
	return out, sc.Err()
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

// storage is PVE::Storage::storage_config.
func (h *Host) storage(id string) (*Storage, error) {
	all, err := h.storages()
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.ID == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("storage '%s' does not exist", id)
}

// checkEnabled is PVE::Storage::storage_check_enabled: disabled first,
// then the node restriction.
func (s *Storage) checkEnabled(node string) error {
	if s.Disabled {
		return fmt.Errorf("storage '%s' is disabled", s.ID)
	}
	if !s.availableOn(node) {
		return fmt.Errorf("storage '%s' is not available on node '%s'", s.ID, node)
	}
	return nil
}

func (s *Storage) availableOn(node string) bool {
	if len(s.Nodes) == 0 {
		return true
	}
	for _, n := range s.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

func (s *Storage) hasContent(c string) bool {
	for _, x := range s.Content {
		if x == c {
			return true
		}
	}
	return false
}

// noRootdirError is a storage that does not hold container directories.
type noRootdirError string

func (e noRootdirError) Error() string {
	return fmt.Sprintf("storage '%s' does not support container directories", string(e))
}

// rootdirStorage is storage id as create_vm and move_volume take it for a
// container volume: enabled on node (storage_check_enabled) and holding
// container directories (a noRootdirError if not).
func (h *Host) rootdirStorage(id, node string) (*Storage, error) {
	s, err := h.storage(id)
	if err != nil {
		return nil, err
	}
	if err := s.checkEnabled(node); err != nil {
		return nil, err
	}
	if !s.hasContent("rootdir") {
		return nil, noRootdirError(id)
	}
	return s, nil
}

// fileBased storages keep templates as files under their path.
func (s *Storage) fileBased() bool { return s.Path != "" }

// simDir is where the stand-in keeps a storage's volumes: LVM thin pools,
// ZFS datasets and directory-storage images all become directories here.
func (h *Host) simDir(storage string) string { return h.path("var/lib/pvesim", storage) }

var (
	volidRE   = regexp.MustCompile(`^(?i)([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	storeIDRE = regexp.MustCompile(`^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	diskRE    = regexp.MustCompile(`^(vm|subvol)-(\d+)-disk-(\d+)$`)
)

// parseVolumeID is PVE::Storage::parse_volume_id.
func parseVolumeID(volid string) (storage, volname string, err error) {
	m := volidRE.FindStringSubmatch(volid)
	if m == nil {
		return "", "", fmt.Errorf("unable to parse volume ID '%s'", volid)
	}
	return m[1], m[2], nil
}

// Volume is a parsed volume of a storage.
type Volume struct {
	Storage *Storage
	Name    string // volname, without "storage:"
	Type    string // vztmpl, iso, backup, rootdir (disks)
	Path    string // absolute path on this machine
	VMID    int    // owner, disks only
}

// templateExtRE is PVE's VZTMPL_EXT_RE_1; plain .tar joined in 9.1.
var (
	templateExtRE    = regexp.MustCompile(`(?i)\.tar\.(gz|xz|zst|bz2)$`)
	templateExtRE91  = regexp.MustCompile(`(?i)(\.tar\.(gz|xz|zst|bz2)|\.tar)$`)
	isoRE            = regexp.MustCompile(`(?i)\.(iso|img)$`)
	volnamePluginErr = map[string]string{"lvm": "lvm", "lvmthin": "lvm", "zfspool": "zfs", "rbd": "rbd"}
)

// parseVolname is the storage plugin's parse_volname plus path.
func (h *Host) parseVolname(s *Storage, volname string) (*Volume, error) {
	v := &Volume{Storage: s, Name: volname}
	if m := diskRE.FindStringSubmatch(volname); m != nil {
		v.Type = "rootdir"
		v.VMID, _ = strconv.Atoi(m[2])
		v.Path = filepath.Join(h.simDir(s.ID), volname)
		return v, nil
	}
	if !s.fileBased() {
		kind := volnamePluginErr[s.Type]
		if kind == "" {
			return nil, fmt.Errorf("unable to parse volume name '%s'", volname)
		}
		return nil, fmt.Errorf("unable to parse %s volume name '%s'", kind, volname)
	}
	bad := fmt.Errorf("unable to parse directory volume name '%s'", volname)
	dir, file, ok := strings.Cut(volname, "/")
	if !ok || file == "" || strings.Contains(file, "/") {
		return nil, bad
	}
	switch dir {
	case "vztmpl":
		re := templateExtRE
		if h.Version.appContainers() {
			re = templateExtRE91
		}
		if !re.MatchString(file) {
			return nil, bad
		}
		v.Type, v.Path = "vztmpl", filepath.Join(s.Path, "template/cache", file)
	case "iso":
		if !isoRE.MatchString(file) {
			return nil, bad
		}
		v.Type, v.Path = "iso", filepath.Join(s.Path, "template/iso", file)
	case "backup":
		v.Type, v.Path = "backup", filepath.Join(s.Path, "dump", file)
	default:
		return nil, bad
	}
	return v, nil
}

// volume resolves "storage:volname".
func (h *Host) volume(volid string) (*Volume, error) {
	sid, name, err := parseVolumeID(volid)
	if err != nil {
		return nil, err
	}
	s, err := h.storage(sid)
	if err != nil {
		return nil, err
	}
	return h.parseVolname(s, name)
}

// allocDisk creates a new volume vm-<vmid>-disk-<n> with the lowest free
// n on the storage (PVE's find_free_diskname). For the rootfs the volume is
// a symlink to the rootfs under the lxcpath, which is where PVE would mount
// it; other volumes are directories owned by the container's root.
func (h *Host) allocDisk(s *Storage, vmid int, unprivileged bool, linkTo string) (string, error) {
	dir := h.simDir(s.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for n := 0; n < 1000; n++ {
		name := fmt.Sprintf("vm-%d-disk-%d", vmid, n)
		p := filepath.Join(dir, name)
		var err error
		if linkTo != "" {
			err = os.Symlink(linkTo, p)
		} else {
			err = os.Mkdir(p, 0o755)
		}
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("unable to allocate volume on storage '%s': %v", s.ID, err)
		}
		if linkTo == "" {
			// mkfs -E root_owner=<mapped root>, as PVE formats CT volumes.
			os.Chmod(p, 0o755)
			if unprivileged {
				if err := os.Chown(p, pvetest.IDMapBase, pvetest.IDMapBase); err != nil {
					os.Remove(p)
					return "", err
				}
			}
		}
		return s.ID + ":" + name, nil
	}
	return "", fmt.Errorf("unable to allocate an image name for VM %d in storage '%s'", vmid, s.ID)
}

// freeDisk removes a simulated volume (PVE::Storage::vdisk_free).
func (h *Host) freeDisk(volid string) error {
	v, err := h.volume(volid)
	if err != nil {
		return err
	}
	if v.Type != "rootdir" {
		return fmt.Errorf("volume '%s' is not a disk", volid)
	}
	// A rootfs volume pct create made is a symlink to its directory.
	if target, err := filepath.EvalSymlinks(v.Path); err == nil && target != v.Path {
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	return os.RemoveAll(v.Path)
}

// ---- mount point values ----

// mpValue is a rootfs/mpN property string: the volume ("local-lvm:8",
// "local-lvm:vm-100-disk-1", "/host/dir") and the other properties in
// order.
type mpValue struct {
	Volume string
	Props  [][2]string
}

func parseMP(value string) mpValue {
	var m mpValue
	for i, part := range strings.Split(value, ",") {
		k, v, hasEq := strings.Cut(part, "=")
		switch {
		case i == 0 && !hasEq:
			m.Volume = part
		case k == "volume":
			m.Volume = v
		default:
			m.Props = append(m.Props, [2]string{k, v})
		}
	}
	return m
}

// String prints the value as print_property_string does: the volume, then
// the other properties sorted by name.
func (m mpValue) String() string {
	props := append([][2]string(nil), m.Props...)
	sort.SliceStable(props, func(i, j int) bool { return props[i][0] < props[j][0] })
	parts := []string{m.Volume}
	for _, p := range props {
		parts = append(parts, p[0]+"="+p[1])
	}
	return strings.Join(parts, ",")
}

// normalizeNet prints a netN value as PVE stores it: name first, the
// rest sorted, with the veth type and a MAC address filled in when absent.
func normalizeNet(value string) string {
	props := map[string]string{}
	for _, part := range strings.Split(value, ",") {
		if k, v, ok := strings.Cut(part, "="); ok {
			props[k] = v
		}
	}
	if props["hwaddr"] == "" {
		props["hwaddr"] = randomMAC()
	}
	if props["type"] == "" {
		props["type"] = "veth"
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		if k != "name" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := []string{"name=" + props["name"]}
	for _, k := range keys {
		parts = append(parts, k+"="+props[k])
	}
	return strings.Join(parts, ",")
}

// randomMAC is a locally administered address under Proxmox's prefix
// BC:24:11, as PVE generates for new interfaces.
func randomMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", b[0], b[1], b[2])
}

func (m mpValue) get(k string) string {
	for _, p := range m.Props {
		if p[0] == k {
			return p[1]
		}
	}
	return ""
}

func (m *mpValue) set(k, v string) {
	for i, p := range m.Props {
		if p[0] == k {
			m.Props[i][1] = v
			return
		}
	}
	m.Props = append(m.Props, [2]string{k, v})
}

// mpType is PVE's classification of a mount point's volume.
func mpType(vol string) string {
	switch {
	case strings.HasPrefix(vol, "/dev/"):
		return "device"
	case strings.HasPrefix(vol, "/"):
		return "bind"
	default:
		return "volume"
	}
}

// newVolumeRE matches "STORAGE:SIZE", a volume to allocate.
var newVolumeRE = regexp.MustCompile(`^(?i)([a-z][a-z0-9\-_.]*[a-z0-9]):(\d+(?:\.\d+)?)$`)

// formatSize prints a size in GiB as PVE does (size=8G, size=512M).
func formatSize(gib float64) string {
	kib := int64(gib*1024) * 1024
	switch {
	case kib%(1024*1024) == 0:
		return fmt.Sprintf("%dG", kib/(1024*1024))
	case kib%1024 == 0:
		return fmt.Sprintf("%dM", kib/1024)
	default:
		return fmt.Sprintf("%dK", kib)
	}
}
