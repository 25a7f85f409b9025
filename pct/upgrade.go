package pct

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/template"
)

// UpgradeOptions say how to upgrade a container (see PlanUpgrade).
type UpgradeOptions struct {
	// Adopt upgrades a container nexcage did not create (no marker in
	// its description). Its old image defaults are unknown: every value
	// it has is kept as the user's, and the new image fills the rest.
	Adopt bool
	// DiscardRootfsChanges upgrades a system container, whose rootfs
	// holds the user's changes (packages, files), which are lost.
	DiscardRootfsChanges bool
	// HealthCmd is run in the upgraded container (pct exec … sh -c)
	// once it has started; its failure rolls the upgrade back.
	HealthCmd string
	// TempVMID is the temporary container's VMID (0 = the next free).
	TempVMID int
	// ReplaceTemplate overwrites a different template of the same name in
	// the template storage (as Options.ReplaceTemplate).
	ReplaceTemplate bool
	TemplateStorage string // default local
	// DropEnv upgrades to an image with an environment on a PVE before
	// 9.1, which can pass it only to the host's hooks too (as
	// Options.DropEnv): the old and new images' environments are left
	// out of the merge, so the container gets none of them.
	DropEnv bool
	// RunAsRoot upgrades to an image whose entrypoint runs as a user on
	// a PVE before 9.2, which has no lxc.init.uid (as Options.RunAsRoot).
	RunAsRoot bool
}

// MergeRow is one setting of the three-way merge: the old image's
// default, the new image's, the container's current value and the
// result ("" = unset).
type MergeRow struct {
	Key        string `json:"key"`
	OldDefault string `json:"old_default"`
	NewDefault string `json:"new_default"`
	Current    string `json:"current"`
	Result     string `json:"result"`
	// Kept is the user's value kept over the new image's default.
	Kept bool `json:"kept"`
}

// UpgradePlan is everything an upgrade will do, decided before any change.
type UpgradePlan struct {
	VMID     int    `json:"vmid"`
	TempVMID int    `json:"temp_vmid"`
	From     Marker `json:"from"`
	To       Marker `json:"to"`
	VolID    string `json:"template"`
	// UpToDate: the container already runs this template; nothing to do.
	UpToDate  bool       `json:"up_to_date"`
	Running   bool       `json:"running"`
	Merge     []MergeRow `json:"merge,omitempty"`
	Upload    *Upload    `json:"upload,omitempty"`
	Warnings  []string   `json:"warnings,omitempty"`
	HealthCmd string     `json:"health_cmd,omitempty"`
	// NewVolumes are the paths of the VOLUMEs only the new image has,
	// each given a new volume (volowner.go).
	NewVolumes []string `json:"new_volumes,omitempty"`
	vols       newVolumes

	storage, size string
	oldRootfs     string // the rootfs value (volume and options)
	oldVol        string
	unusedKey     string
	unprivileged  bool
	ostype, arch  string
	entrypoint    *string  // pct set --entrypoint (nil: unchanged; "": delete)
	raw           []string // the managed raw lines after the upgrade
	marker        string   // the description's marker line, old and new
	newMarker     string
	before        []byte // the config when planned
	path          string
	remote        *remoteUpgrade // through the API
	// NewVolume is learnt while the upgrade runs: the new rootfs.
	newVol string
}

// managedRaw are the raw keys an image decides (besides the environment),
// merged on upgrade.
var managedRaw = []string{"lxc.init.cmd", "lxc.init.cwd", "lxc.init.uid", "lxc.init.gid", "lxc.init.groups", "lxc.signal.halt"}

func (p *UpgradePlan) tmpCreateArgv() []string {
	a := []string{"pct", "create", strconv.Itoa(p.TempVMID), p.VolID, "--rootfs", p.storage + ":" + p.size,
		"--unprivileged", map[bool]string{true: "1", false: "0"}[p.unprivileged],
		"--hostname", fmt.Sprintf("nexcage-upgrade-%d", p.VMID)}
	if p.ostype != "" {
		a = append(a, "--ostype", p.ostype)
	}
	if p.arch != "" {
		a = append(a, "--arch", p.arch)
	}
	return a
}

// shutdownArgv stops the container cleanly (its stop signal, 60 s), then
// for good: pct's option is camel-case forceStop.
func (p *UpgradePlan) shutdownArgv() []string {
	return []string{"pct", "shutdown", p.vmid(), "--" + "forceStop", "1"}
}

func (p *UpgradePlan) vmid() string { return strconv.Itoa(p.VMID) }
func (p *UpgradePlan) tmp() string  { return strconv.Itoa(p.TempVMID) }

// newRootfs is the rootfs value naming vol, with the old one's options.
func (p *UpgradePlan) rootfsWith(vol string) string {
	_, opts, _ := strings.Cut(p.oldRootfs, ",")
	if opts == "" {
		return vol
	}
	return vol + "," + opts
}

// Argvs are the upgrade's PVE commands in order, as run when nothing
// fails (NEWVOL stands for the new rootfs volume until it exists).
func (p *UpgradePlan) Argvs() [][]string {
	if p.UpToDate {
		return nil
	}
	newVol := cmp.Or(p.newVol, p.storage+":NEWVOL")
	out := [][]string{
		p.tmpCreateArgv(),
		{"pct", "move-volume", p.tmp(), "rootfs", p.storage},
		{"pct", "move-volume", p.tmp(), "unused0", "--target-vmid", p.vmid(), "--target-volume", p.unusedKey},
		{"pct", "destroy", p.tmp(), "--purge"},
	}
	if p.Running {
		out = append(out, p.shutdownArgv())
	}
	out = append(out, []string{"pct", "set", p.vmid(), "--rootfs", p.rootfsWith(newVol), "--" + p.unusedKey, p.oldVol})
	if p.entrypoint != nil {
		if *p.entrypoint == "" {
			out = append(out, []string{"pct", "set", p.vmid(), "--delete", "entrypoint"})
		} else {
			out = append(out, []string{"pct", "set", p.vmid(), "--entrypoint", *p.entrypoint})
		}
	}
	out = append(out, p.newVolumeArgvs()...)
	out = append(out, []string{"pct", "start", p.vmid()})
	if p.HealthCmd != "" {
		out = append(out, []string{"pct", "exec", p.vmid(), "--", "sh", "-c", p.HealthCmd})
	}
	if !p.Running {
		out = append(out, p.shutdownArgv())
	}
	out = append(out, []string{"pct", "set", p.vmid(), "--delete", p.unusedKey})
	return out
}

// Commands lists the plan for --dry-run, shell-quoted, with the config
// lines written under the config lock.
func (p *UpgradePlan) Commands() []string {
	if p.UpToDate {
		return []string{fmt.Sprintf("# CT %d already runs %s: nothing to do", p.VMID, p.VolID)}
	}
	if p.remote != nil {
		return p.remoteUpgradeCommands()
	}
	var out []string
	if p.Upload != nil && !p.Upload.Skip {
		out = append(out, ShellQuote([]string{"cp", p.Upload.From, p.Upload.To}))
	}
	for _, a := range p.Argvs() {
		out = append(out, ShellQuote(a))
		if a[1] == "mount" {
			out = append(out, ownComments(p.VMID, p.vols.own)...)
		}
		if a[1] == "set" && len(a) > 3 && a[3] == "--rootfs" {
			out = append(out, fmt.Sprintf("# in %s under its config lock: the description's %q becomes %q", p.path, p.marker, p.newMarker))
			out = append(out, fmt.Sprintf("# in %s under its config lock: the environment and %s become:", p.path, strings.Join(managedRaw, ", ")))
			for _, l := range p.raw {
				out = append(out, "#   "+hiddenRawLine(l))
			}
		}
	}
	return out
}

// PlanUpgrade plans moving CT vmid to template t, changing nothing: the
// container's rootfs is replaced by t's (docs/proxmox.md §8) while its
// VMID, config, mount points and their data stay, and the image settings
// (entrypoint, environment, cwd, user, stop signal) are merged three
// ways: a value equal to the old image's default takes the new image's,
// a value the user changed stays. oldT is the template the container
// came from (nil when unknown: with Adopt, or when it is gone).
func PlanUpgrade(ctx context.Context, h *Host, vmid int, oldT, t *Template, o UpgradeOptions) (*UpgradePlan, error) {
	p := &UpgradePlan{VMID: vmid, HealthCmd: o.HealthCmd, path: h.configPath(vmid, "")}
	raw, err := h.readUpgradeConfig(ctx, p)
	if err != nil {
		return nil, err
	}
	p.before = raw
	text := string(raw)
	if strings.Contains(text, "\n[") || strings.HasPrefix(text, "[") {
		return nil, errSnapshots(vmid)
	}
	if hasKey(text, "lock") {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d is locked", vmid), "wait for the operation holding it, or `pct unlock` it")
	}
	ver, err := h.Version(ctx)
	if err != nil {
		return nil, err
	}
	cv, err := h.ContainerVersion(ctx, ver)
	if err != nil {
		return nil, err
	}
	cur, err := lxc.ParseFor(text, cv)
	if err != nil {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d's config cannot be read: %v", vmid, err), "fix it with `pct set`")
	}
	m, managed := parseMarker(cur.Description)
	switch {
	case managed:
		p.From = m
		p.marker = m.line()
	case !o.Adopt:
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d was not created by nexcage (no marker in its description)", vmid), "upgrade it with Adopt, and Image naming the image it runs", "Adopt", "Image")
	}
	if !isAppContainer(cur) && !o.DiscardRootfsChanges {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d is a system container: its rootfs holds its own changes (packages, files), which the new template's rootfs replaces", vmid), "back up what you need, then upgrade with DiscardRootfsChanges", "DiscardRootfsChanges")
	}

	// The template, on the host (or through the API).
	if h.Remote() {
		if err := h.planUpgradeTemplateRemote(ctx, p, t, o); err != nil {
			return nil, err
		}
	} else if t.VolID != "" {
		p.VolID = t.VolID
		if _, err := h.TemplatePath(ctx, t.VolID); err != nil {
			return nil, err
		}
	} else {
		ts := cmp.Or(o.TemplateStorage, "local")
		p.VolID = ts + ":vztmpl/" + filepath.Base(t.File)
		dest, err := h.TemplatePath(ctx, p.VolID)
		if err != nil {
			return nil, err
		}
		p.Upload, err = planUpload(t, dest, o.ReplaceTemplate)
		if errors.Is(err, ErrAlreadyExists) {
			// A re-pulled tag builds a template of the old one's name:
			// overwriting it would change what rollback and other CTs
			// rely on, so the new one goes under a name with its digest.
			sum := t.SHA256
			if sum == "" {
				if sum, err = fileSHA256(t.File); err != nil {
					return nil, err
				}
			}
			p.VolID = ts + ":vztmpl/" + digestName(filepath.Base(t.File), sum)
			if dest, err = h.TemplatePath(ctx, p.VolID); err != nil {
				return nil, err
			}
			p.Upload, err = planUpload(t, dest, false)
		}
		if err != nil {
			return nil, err
		}
	}
	for k, v := range map[string]string{"template": p.VolID, "image reference": t.Image, "digest": t.Digest} {
		if !markerValueOK(k, v) {
			return nil, newError(ErrInvalidArgument, "template", fmt.Sprintf("the template's %s %q has characters outside its grammar (a blank, '%%', a control character), which would forge the container's ownership marker", k, v), "rebuild the template")
		}
	}
	p.To = Marker{Template: p.VolID, Image: t.Image, Digest: t.Digest}
	p.newMarker = p.To.line()
	if managed && p.From == p.To && (p.Upload == nil || p.Upload.Skip) {
		p.UpToDate = true
		return p, nil
	}

	// The rootfs: its storage and size, and a free unusedN for the swap.
	p.unprivileged = cur.Unprivileged
	if t.Privileged && p.unprivileged {
		return nil, newError(ErrInvalidArgument, "template", "the new template is privileged-only and the container is unprivileged", "use an unprivileged template")
	}
	for _, opt := range cur.Options {
		if opt.Key == "rootfs" {
			p.oldRootfs = opt.Value
		}
	}
	p.oldVol, _, _ = strings.Cut(p.oldRootfs, ",")
	store, _, ok := strings.Cut(p.oldVol, ":")
	if !ok || strings.HasPrefix(p.oldVol, "/") {
		return nil, newError(ErrInvalidArgument, "rootfs", fmt.Sprintf("CT %d's rootfs %q is not a storage volume", vmid, p.oldRootfs), "only a rootfs on a storage can be replaced")
	}
	p.storage = store
	p.size = "8"
	for _, f := range strings.Split(p.oldRootfs, ",")[1:] {
		if v, ok := strings.CutPrefix(f, "size="); ok {
			p.size = gib(v)
		}
	}
	for i := 0; i <= 255; i++ {
		k := "unused" + strconv.Itoa(i)
		if !hasKey(text, k) {
			p.unusedKey = k
			break
		}
	}
	if p.unusedKey == "" {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d has no free unusedN key", vmid), "remove unused volumes with `pct set --delete unusedN`")
	}
	if p.TempVMID = o.TempVMID; p.TempVMID == 0 {
		if p.TempVMID, err = h.NextID(ctx); err != nil {
			return nil, err
		}
	}
	if p.Running, err = h.running(ctx, vmid); err != nil {
		return nil, err
	}

	// The three-way merge, in the host's representation.
	dropEnv := o.DropEnv && !cv.AppContainers()
	newC, dropped, err := imageConfig(t, cv, h.Remote(), dropEnv, o.RunAsRoot)
	if err != nil {
		return nil, err
	}
	if len(dropped) > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("pve-container %s can pass the environment only to the host's hooks too: left out the new image's %s", cv, strings.Join(dropped, ", ")))
	}
	var oldC *lxc.Config
	if oldT != nil && managed {
		if oldC, _, err = imageConfig(oldT, cv, h.Remote(), dropEnv, o.RunAsRoot); err != nil {
			return nil, err
		}
	} else if managed {
		gone := "is gone"
		if h.Remote() {
			gone = "has no local copy with its digest (the API cannot read its .conf)"
		}
		p.Warnings = append(p.Warnings, fmt.Sprintf("the old template %s %s: its defaults are unknown, so every current value is kept as the user's", p.From.Template, gone))
	}
	p.ostype, p.arch = cmp.Or(newC.OSType, cur.OSType), cmp.Or(newC.Arch, cur.Arch)
	p.merge(oldC, newC, cur, cv)
	if err := p.planNewVolumes(text, cur, oldT, t, cv, !h.Remote()); err != nil {
		return nil, err
	}
	if p.remote != nil {
		if err := p.finishRemoteUpgrade(cur, ver, cv); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// digestName is NAME-<sha12>.SUFFIX for a template file NAME.SUFFIX.
func digestName(file, sum string) string {
	if len(sum) > 12 {
		sum = sum[:12]
	}
	conf, _ := template.SidecarPaths(file)
	stem := strings.TrimSuffix(conf, ".conf")
	return stem + "-" + sum + file[len(stem):]
}

// isAppContainer is isApp on any PVE: before 9.1 the entrypoint is a
// raw lxc.init.cmd line.
func isAppContainer(c *lxc.Config) bool {
	if isApp(*c) {
		return true
	}
	args := lxc.SplitCommand(rawValue(c, "lxc.init.cmd"))
	return len(args) > 0 && args[0] != "/sbin/init"
}

// imageConfig is what a template's image sets, as deploy writes it on
// this pve-container (through the API: without the stop signal nexcage
// adds, a raw key the API cannot write); with dropEnv without its
// environment, whose names it returns; with runAsRoot its entrypoint run
// as root where PVE has no lxc.init.uid.
func imageConfig(t *Template, cv lxc.PVEContainer, remote, dropEnv, runAsRoot bool) (*lxc.Config, []string, error) {
	var c lxc.Config
	if t.Config != nil {
		c = *t.Config
	}
	if !remote {
		appDefaults(&c)
	}
	var dropped []string
	if dropEnv {
		c, dropped = c.DropEnv()
	}
	out, err := c.For(cv, runAsRoot)
	if err != nil {
		return nil, nil, releaseError(err, cv)
	}
	return &out, dropped, nil
}

func rawValue(c *lxc.Config, key string) string {
	if c == nil {
		return ""
	}
	for _, r := range c.Raw {
		if r.Key == key {
			return r.Value
		}
	}
	return ""
}

func envMap(c *lxc.Config) (map[string]string, []string) {
	m := map[string]string{}
	var order []string
	if c == nil {
		return m, nil
	}
	for _, e := range c.Env {
		k, _, _ := strings.Cut(e, "=")
		if _, dup := m[k]; !dup {
			order = append(order, k)
		}
		m[k] = e
	}
	return m, order
}

// merge3 is one value: the user's when it differs from the old default.
// Without an old image (nil) every value set is the user's.
func merge3(haveOld bool, old, nw, cur string) (string, bool) {
	if (haveOld && cur == old) || (!haveOld && cur == "") {
		return nw, false
	}
	return cur, cur != nw
}

func (p *UpgradePlan) merge(oldC, newC, cur *lxc.Config, cv lxc.PVEContainer) {
	haveOld := oldC != nil
	var oldEntry string
	if oldC != nil {
		oldEntry = oldC.Entrypoint
	}
	if cv.AppContainers() {
		res, kept := merge3(haveOld, oldEntry, newC.Entrypoint, cur.Entrypoint)
		p.Merge = append(p.Merge, MergeRow{"entrypoint", oldEntry, newC.Entrypoint, cur.Entrypoint, res, kept})
		if res != cur.Entrypoint {
			p.entrypoint = &res
		}
	}
	oldEnv, _ := envMap(oldC)
	newEnv, newOrder := envMap(newC)
	curEnv, curOrder := envMap(cur)
	names := append([]string(nil), newOrder...)
	for _, k := range curOrder {
		if _, ok := newEnv[k]; !ok {
			names = append(names, k)
		}
	}
	for k := range oldEnv {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	for _, k := range names {
		res, kept := merge3(haveOld, oldEnv[k], newEnv[k], curEnv[k])
		p.Merge = append(p.Merge, MergeRow{"env " + k, oldEnv[k], newEnv[k], curEnv[k], res, kept})
		if res != "" {
			p.raw = append(p.raw, "lxc.environment.runtime: "+res)
		}
	}
	for _, k := range managedRaw {
		o, n, c := rawValue(oldC, k), rawValue(newC, k), rawValue(cur, k)
		if o == "" && n == "" && c == "" {
			continue
		}
		res, kept := merge3(haveOld, o, n, c)
		p.Merge = append(p.Merge, MergeRow{k, o, n, c, res, kept})
		if res != "" {
			p.raw = append(p.raw, k+": "+res)
		}
	}
}

// gib turns PVE's size (8G, 512M, 1T) into GiB for STORAGE:SIZE.
func gib(v string) string {
	if v == "" {
		return "8"
	}
	n, err := strconv.ParseFloat(strings.TrimRight(v, "KMGTkmgt"), 64)
	if err != nil {
		return "8"
	}
	switch strings.ToUpper(v[len(v)-1:]) {
	case "K":
		n /= 1024 * 1024
	case "M":
		n /= 1024
	case "T":
		n *= 1024
	}
	return strconv.FormatFloat(n, 'f', -1, 64)
}

func hasKey(text, key string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "[") {
			return false
		}
		if strings.HasPrefix(l, key+":") {
			return true
		}
	}
	return false
}

// running asks pct whether the container runs.
func (h *Host) running(ctx context.Context, vmid int) (bool, error) {
	if h.Remote() {
		return h.remoteRunning(ctx, vmid)
	}
	out, err := h.run(ctx, "pct", "status", strconv.Itoa(vmid))
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "status: running"), nil
}

// UpgradeError is a failed upgrade: what failed, and whether the
// container was put back as it was.
type UpgradeError struct {
	VMID     int
	Step     string // the command or action that failed
	Err      error
	Restored bool
	// RestoreErr is why putting it back failed, when it did.
	RestoreErr error
}

func (e *UpgradeError) Error() string {
	if e.Restored {
		return fmt.Sprintf("upgrading CT %d failed at %s: %v (CT %d was put back as it was: rootfs, config and volumes)", e.VMID, e.Step, e.Err, e.VMID)
	}
	return fmt.Sprintf("upgrading CT %d failed at %s: %v; putting it back failed too: %v", e.VMID, e.Step, e.Err, e.RestoreErr)
}

func (e *UpgradeError) Unwrap() error { return e.Err }

// UpgradeResult is what an upgrade did.
type UpgradeResult struct {
	VMID     int      `json:"vmid"`
	UpToDate bool     `json:"up_to_date"`
	Started  bool     `json:"started"`
	Commands []string `json:"commands"`
}

// Upgrade carries out an upgrade plan. Until the upgraded container has
// started (and its health command succeeded) the old rootfs is kept as
// an unusedN volume; any failure puts the container back exactly as it
// was: its rootfs, its config file byte for byte, its volumes, and
// running if it ran.
func Upgrade(ctx context.Context, h *Host, p *UpgradePlan) (*UpgradeResult, error) {
	res := &UpgradeResult{VMID: p.VMID, UpToDate: p.UpToDate}
	if p.UpToDate {
		return res, nil
	}
	if p.remote != nil {
		return h.upgradeRemote(ctx, p, res)
	}
	now, err := os.ReadFile(p.path)
	if err != nil || string(now) != string(p.before) {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d's config changed since the upgrade was planned", p.VMID), "plan it again")
	}
	// Stopped or started since the plan: put back as it is now.
	if p.Running, err = h.running(ctx, p.VMID); err != nil {
		return nil, err
	}
	if p.Upload != nil && !p.Upload.Skip {
		if err := upload(p.Upload); err != nil {
			return nil, err
		}
	}
	var (
		tmpMade, handed, swapped, stopped, started, mounting bool
	)
	record := func(argv []string) { res.Commands = append(res.Commands, ShellQuote(argv)) }
	run := func(argv ...string) error {
		record(argv)
		_, err := h.run(ctx, argv...)
		return err
	}
	fail := func(step string, cause error) error {
		bg := context.WithoutCancel(ctx)
		var errs []error
		try := func(argv ...string) {
			if _, err := h.run(bg, argv...); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ShellQuote(argv), err))
			}
		}
		// PVE refuses every config write below while pct mount's lock
		// stays (an interrupted or failed unmount).
		if mounting {
			if err := h.releaseMount(bg, p.VMID, nil); err != nil {
				errs = append(errs, err)
			}
		}
		if up, _ := h.running(bg, p.VMID); started && up {
			try("pct", "stop", p.vmid())
		}
		if err := h.removeNewVolumes(bg, p); err != nil {
			errs = append(errs, err)
		}
		// What the config holds, not what pct answered: a swap that
		// failed (or was killed) after PVE wrote it is made.
		if handed && p.newVol != "" && volumeOf(mustConfigValue(h, p.VMID, "rootfs")) == p.newVol {
			swapped, handed = true, false
		}
		if swapped {
			back := []string{"pct", "set", p.vmid(), "--rootfs", p.oldRootfs, "--" + p.unusedKey, p.newVol}
			if _, err := h.run(bg, back...); err != nil {
				// unusedN still holds the old rootfs: deleting it, or
				// writing back a config that names it as the rootfs
				// while it is not, would lose the container's data.
				errs = append(errs, fmt.Errorf("%s: %w; CT %d's rootfs is still the new volume %s and its old rootfs %s is %s: nothing was deleted; put it back with `%s`, then `pct set %d --delete %s`", ShellQuote(back), err, p.VMID, p.newVol, p.oldVol, p.unusedKey, ShellQuote(back), p.VMID, p.unusedKey))
				return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, RestoreErr: errors.Join(errs...)}
			}
			handed = true // the new rootfs is unusedN again
		}
		if handed {
			// Only the new volume is freed: were unusedN the old rootfs
			// (a swap-back that failed after writing half), deleting it
			// would lose the container's data.
			switch u := volumeOf(mustConfigValue(h, p.VMID, p.unusedKey)); {
			case u == "":
			case u == p.newVol:
				try("pct", "set", p.vmid(), "--delete", p.unusedKey)
			default:
				errs = append(errs, fmt.Errorf("CT %d's %s is %q, not the new rootfs %s: it was not deleted; free the new rootfs with `pct set %d --delete unusedM` once you find it", p.VMID, p.unusedKey, u, p.newVol, p.VMID))
				return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, RestoreErr: errors.Join(errs...)}
			}
		}
		if err := h.writeConfigLocked(p.VMID, p.before); err != nil {
			errs = append(errs, err)
		}
		if tmpMade {
			try("pct", "destroy", p.tmp(), "--purge")
		}
		if p.Running && (stopped || started) {
			try("pct", "start", p.vmid())
		}
		return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, Restored: len(errs) == 0, RestoreErr: errors.Join(errs...)}
	}
	create := p.tmpCreateArgv()
	if err := run(create...); err != nil {
		// PVE's create_vm removes what a failed create made; and a
		// TempVMID taken meanwhile is someone else's container.
		return nil, fail(ShellQuote(create), err)
	}
	tmpMade = true
	if err := run("pct", "move-volume", p.tmp(), "rootfs", p.storage); err != nil {
		return nil, fail("moving the new rootfs out of CT "+p.tmp(), err)
	}
	if err := run("pct", "move-volume", p.tmp(), "unused0", "--target-vmid", p.vmid(), "--target-volume", p.unusedKey); err != nil {
		return nil, fail("handing the new rootfs to CT "+p.vmid(), err)
	}
	handed = true
	if p.newVol, err = h.configValue(p.VMID, p.unusedKey); err != nil || p.newVol == "" {
		return nil, fail("reading the new rootfs volume", fmt.Errorf("CT %d has no %s after the move: %v", p.VMID, p.unusedKey, err))
	}
	if err := run("pct", "destroy", p.tmp(), "--purge"); err != nil {
		return nil, fail("destroying the temporary CT "+p.tmp(), err)
	}
	tmpMade = false
	if p.Running {
		stopped = true
		if err := run(p.shutdownArgv()...); err != nil {
			return nil, fail("stopping CT "+p.vmid(), err)
		}
	}
	// One config write, which an interrupt must not leave done but
	// unreported.
	swap := []string{"pct", "set", p.vmid(), "--rootfs", p.rootfsWith(p.newVol), "--" + p.unusedKey, p.oldVol}
	record(swap)
	fctx, cancel := firmContext(ctx)
	_, err = h.run(fctx, swap...)
	cancel()
	if err != nil {
		return nil, fail("swapping the rootfs", err)
	}
	swapped, handed = true, false
	if p.entrypoint != nil {
		argv := []string{"pct", "set", p.vmid(), "--entrypoint", *p.entrypoint}
		if *p.entrypoint == "" {
			argv = []string{"pct", "set", p.vmid(), "--delete", "entrypoint"}
		}
		if err := run(argv...); err != nil {
			return nil, fail("setting the entrypoint", err)
		}
	}
	if err := h.rewriteImageLines(p); err != nil {
		return nil, fail("writing the environment and the marker", err)
	}
	if err := h.addNewVolumes(ctx, p, run, record, &mounting); err != nil {
		return nil, fail("adding the new image's volumes", err)
	}
	started = true
	if err := run("pct", "start", p.vmid()); err != nil {
		return nil, fail("starting CT "+p.vmid(), err)
	}
	// An application whose entrypoint dies at once has "started": it
	// must still run a moment later.
	for i := 0; i < 3; i++ {
		time.Sleep(500 * time.Millisecond)
		if up, err := h.running(ctx, p.VMID); err != nil || !up {
			return nil, fail("starting CT "+p.vmid(), fmt.Errorf("it stopped right after its start (%v)", err))
		}
	}
	if p.HealthCmd != "" {
		// A moment for the application to come up is the health
		// command's business (it may retry); pct exec runs it now.
		if err := run("pct", "exec", p.vmid(), "--", "sh", "-c", p.HealthCmd); err != nil {
			return nil, fail("the health command", err)
		}
	}
	res.Started = true
	if !p.Running {
		if err := run(p.shutdownArgv()...); err != nil {
			return nil, fail("stopping CT "+p.vmid()+" again", err)
		}
		started, res.Started = false, false
	}
	// Committed: the old rootfs goes.
	if err := run("pct", "set", p.vmid(), "--delete", p.unusedKey); err != nil {
		return res, fmt.Errorf("CT %d was upgraded, but freeing its old rootfs %s failed (remove it with `pct set %d --delete %s`): %w", p.VMID, p.oldVol, p.VMID, p.unusedKey, err)
	}
	return res, nil
}

// configValue reads one key of a CT's config.
func (h *Host) configValue(vmid int, key string) (string, error) {
	b, err := os.ReadFile(h.configPath(vmid, ""))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[") {
			break
		}
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", nil
}

// mustConfigValue is configValue, "" when the config cannot be read.
func mustConfigValue(h *Host, vmid int, key string) string {
	v, _ := h.configValue(vmid, key)
	return v
}

// volumeOf is the volume id of a rootfs, mpN or unusedN value.
func volumeOf(v string) string {
	vol, _, _ := strings.Cut(v, ",")
	return vol
}

// writeConfigLocked puts a config back byte for byte.
func (h *Host) writeConfigLocked(vmid int, b []byte) error {
	return h.withConfigLock(vmid, "", func(string) (string, error) { return string(b), nil })
}

// rewriteImageLines replaces, in the main section, the raw lines the
// image decides by the merged ones, and the marker by the new one.
func (h *Host) rewriteImageLines(p *UpgradePlan) error {
	return h.withConfigLock(p.VMID, "", func(text string) (string, error) {
		main, rest := splitMainSection(text)
		var out []string
		replaced := false
		for _, l := range strings.Split(strings.TrimSuffix(main, "\n"), "\n") {
			k, _, _ := strings.Cut(l, ":")
			switch {
			case k == "lxc.environment.runtime" || slices.Contains(managedRaw, k):
				continue
			case p.marker != "" && !replaced && isMarkerLine(l, p.From):
				out = append(out, "#"+lxc.EncodeText(p.newMarker))
				replaced = true
				continue
			}
			out = append(out, l)
		}
		if !replaced {
			// Adopted: the marker goes after the description.
			i := 0
			for i < len(out) && strings.HasPrefix(out[i], "#") {
				i++
			}
			out = append(out[:i], append([]string{"#" + lxc.EncodeText(p.newMarker)}, out[i:]...)...)
		}
		out = append(out, p.raw...)
		return strings.Join(out, "\n") + "\n" + rest, nil
	})
}

// isMarkerLine reports whether the config line l is the description
// line holding marker m, as nexcage or PVE (percent-encoded) wrote it.
func isMarkerLine(l string, m Marker) bool {
	d, ok := strings.CutPrefix(l, "#")
	if !ok {
		return false
	}
	got, ok := parseMarkerLine(d)
	return ok && got == m
}

// SortedMerge returns the merge rows with the user's kept values first.
func (p *UpgradePlan) SortedMerge() []MergeRow {
	rows := append([]MergeRow(nil), p.Merge...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Kept && !rows[j].Kept })
	return rows
}
