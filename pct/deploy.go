package pct

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/template"
)

// Template is what is deployed: a local template file with what its
// sidecars say, or a volume already on the host.
type Template struct {
	File  string // local file, or ""
	VolID string // STORAGE:vztmpl/NAME, or "" for a local file
	// Config is the template's .conf (nil when there is none).
	Config     *lxc.Config
	Privileged bool     // a privileged-only template
	Volumes    []string // image VOLUMEs: storage-backed mount points
	SHA256     string
	Sidecars   []string // the local .conf and .json, uploaded with it
	// Image and Digest are where the template came from, recorded in the
	// container's description.
	Image, Digest string
}

// BindMount binds host directory Source at Dest in the container
// (SRC:DEST[:ro]).
type BindMount struct {
	Source, Dest string
	RO           bool
}

// Options say how to deploy a template: pct's names where pct has one.
type Options struct {
	VMID            int // 0 = next free
	Node            string
	Hostname        string
	Storage         string // rootfs storage (default local-lvm)
	RootfsSize      int    // GiB (default 8)
	TemplateStorage string // default local
	ReplaceTemplate bool
	Memory          int  // MiB; 0 = PVE's default
	Swap            *int // MiB; nil = PVE's default (0 is no swap)
	Cores           int
	Net0            string
	Unprivileged    *bool // nil: from the template
	Features        string
	Mounts          []BindMount
	VolumeSize      int // GiB for each image VOLUME (default 8)
	Password        string
	SSHKeysFile     string
	Start           bool
	// KeepFailed keeps a container whose set-up failed after it was
	// created, instead of destroying it (Deploy reads it from the Plan).
	KeepFailed bool
	// RunAsRoot deploys an image whose entrypoint runs as a user
	// (lxc.init.uid/gid) on a PVE before 9.2, whose pve-container refuses
	// those keys, by running it as root instead.
	RunAsRoot bool
	// DropEnv deploys an image with an environment to a PVE before 9.1,
	// which could only pass it as plain lxc.environment (reaching the
	// hooks PVE runs as root on the host), without that environment.
	DropEnv bool
	// AllowTemplateMounts applies the bind mounts a template's .conf asks
	// for; without it deploy refuses them unless Mounts repeats them.
	AllowTemplateMounts bool
	Description         string
	// Extra are more "--opt value" pairs for pct create (tests, niche
	// options); the fields above win.
	Extra []string
}

// Plan is everything a deploy will do, decided before any change.
type Plan struct {
	VMID     int
	autoVMID bool
	Node     string
	Version  Version
	// Container is the host's pve-container release: it decides what the
	// config may hold.
	Container lxc.PVEContainer
	VolID     string
	Upload    *Upload       // nil when the template is already there
	Create    []string      // pct create (or pvesh create) argv, without the VMID filled in for retries
	Set       []string      // pct set argv for mount points, or nil
	own       []ownedVolume // volumes given the image's owner through pct mount
	Raw       []string      // raw lxc.* lines for the config file, environment first
	Start     []string      // pct start argv, or nil
	Config    lxc.Config    // the container config that results
	// Warnings are what the plan does that the user should hear about:
	// dropped environment variables, template bind mounts applied.
	Warnings []string
	// KeepFailed is Options.KeepFailed: Deploy keeps a container whose
	// set-up failed instead of destroying it.
	KeepFailed bool
	// password goes to pct create's standard input (or the API request's
	// body), never into argv, a listing or a result.
	password string
	// remote is set on a plan made for a host reached through the API.
	remote  *remotePlan
	apiUser string
}

// Upload copies a local template, and its .conf and .json sidecars when
// it has them, into the template storage; PVE ignores the sidecars, and
// `nexcage deploy STORAGE:vztmpl/NAME` and `nexcage check` read them there.
type Upload struct {
	From, To string
	Skip     bool // an identical file is there already
	Sidecars []string
}

// Commands lists the plan's commands for --dry-run, shell-quoted.
func (p *Plan) Commands() []string {
	if p.remote != nil {
		return p.remoteCommands()
	}
	var out []string
	if p.Upload != nil {
		if p.Upload.Skip {
			out = append(out, "# "+p.Upload.To+" is already there (same sha256)")
		} else {
			out = append(out, ShellQuote([]string{"cp", p.Upload.From, p.Upload.To}))
		}
	}
	out = append(out, ShellQuote(p.createArgv(p.VMID)))
	if p.password != "" {
		out = append(out, "# pct create's --password= reads the root password from its standard input (not shown)")
	}
	if p.Set != nil {
		out = append(out, ShellQuote(p.setArgv(p.VMID)))
	}
	out = append(out, ownCommands(p.VMID, p.own)...)
	for _, l := range p.Raw {
		out = append(out, fmt.Sprintf("# append to %s under its config lock: %s", p.configFile(), hiddenRawLine(l)))
	}
	if p.Start != nil {
		out = append(out, ShellQuote(p.startArgv(p.VMID)))
	}
	return out
}

func (p *Plan) configFile() string {
	if p.Node != "" {
		return fmt.Sprintf("/etc/pve/nodes/%s/lxc/%d.conf", p.Node, p.VMID)
	}
	return fmt.Sprintf("/etc/pve/lxc/%d.conf", p.VMID)
}

func (p *Plan) createArgv(vmid int) []string {
	id := strconv.Itoa(vmid)
	if p.Node != "" {
		return append([]string{"pvesh", "create", "/nodes/" + p.Node + "/lxc", "--vmid", id, "--ostemplate", p.VolID}, p.Create...)
	}
	return append([]string{"pct", "create", id, p.VolID}, p.Create...)
}

// The container of another node is reached through the API: pct only
// knows the containers of the node it runs on.
func (p *Plan) setArgv(vmid int) []string {
	if p.Node != "" {
		return append([]string{"pvesh", "set", fmt.Sprintf("/nodes/%s/lxc/%d/config", p.Node, vmid)}, p.Set...)
	}
	return append([]string{"pct", "set", strconv.Itoa(vmid)}, p.Set...)
}

func (p *Plan) startArgv(vmid int) []string {
	if p.Node != "" {
		return []string{"pvesh", "create", fmt.Sprintf("/nodes/%s/lxc/%d/status/start", p.Node, vmid)}
	}
	return []string{"pct", "start", strconv.Itoa(vmid)}
}

func (p *Plan) destroyArgv(vmid int) []string {
	if p.Node != "" {
		return []string{"pvesh", "delete", fmt.Sprintf("/nodes/%s/lxc/%d", p.Node, vmid), "--purge", "1"}
	}
	return []string{"pct", "destroy", strconv.Itoa(vmid), "--purge"}
}

// MakePlan validates a deploy against the flags, the template and the
// host, changing nothing; every refusal is an *Error naming the Options
// field (Fields) or PVE parameter at fault, and the fix.
func MakePlan(ctx context.Context, h *Host, t *Template, o Options) (*Plan, error) {
	if err := validateFlags(t, o, h.Remote()); err != nil {
		return nil, err
	}
	p := &Plan{Node: o.Node}
	var err error
	if p.Version, err = h.Version(ctx); err != nil {
		return nil, err
	}
	if p.Container, err = h.ContainerVersion(ctx, p.Version); err != nil {
		return nil, err
	}
	storages, err := h.Storages(ctx)
	if err != nil {
		return nil, err
	}
	rootStorage := cmp.Or(o.Storage, "local-lvm")
	if h.Remote() {
		if err := h.planRemote(ctx, p, t, o, storages); err != nil {
			return nil, err
		}
	} else if err := h.planLocal(ctx, p, t, o, storages, rootStorage); err != nil {
		return nil, err
	}

	// The VMID: given and free, or the next free one.
	resources, err := h.Resources(ctx)
	if err != nil {
		return nil, err
	}
	if o.VMID != 0 {
		for _, r := range resources {
			if r.VMID == o.VMID {
				return nil, newError(ErrAlreadyExists, "vmid", fmt.Sprintf("CT %d already exists on node '%s'", o.VMID, r.Node), fixVMIDTaken, "VMID")
			}
		}
		p.VMID = o.VMID
	} else {
		if p.VMID, err = h.NextID(ctx); err != nil {
			return nil, err
		}
		p.autoVMID = true
	}

	merged := mergedConfig(t, o, rootStorage)
	for k, v := range map[string]string{"template": p.VolID, "image reference": t.Image, "digest": t.Digest} {
		if !markerValueOK(k, v) {
			return nil, newError(ErrInvalidArgument, "template", fmt.Sprintf("the template's %s %q has characters outside its grammar (a blank, '%%', a control character), which would forge the container's ownership marker", k, v), "rebuild the template")
		}
	}
	merged.Description = describe(merged.Description, Marker{Template: p.VolID, Image: t.Image, Digest: t.Digest})
	if merged.MountPoints, err = mountPoints(t, o, rootStorage); err != nil {
		return nil, err
	}
	if h.Remote() && isApp(merged) && !hasRaw(merged, "lxc.signal.halt") {
		// Only root@pam on the host writes raw keys: the stop signal
		// nexcage adds itself is left out, and said so.
		p.Warnings = append(p.Warnings, "the API cannot set lxc.signal.halt: the application is stopped with LXC's default SIGPWR, not SIGTERM as PVE's own OCI import does")
	} else {
		appDefaults(&merged)
	}
	if o.DropEnv && !p.Container.AppContainers() {
		var dropped []string
		if merged, dropped = merged.DropEnv(); len(dropped) > 0 {
			p.Warnings = append(p.Warnings, fmt.Sprintf("pve-container %s can pass the environment only to the host's hooks too: dropped the image's %s", p.Container, strings.Join(dropped, ", ")))
		}
	}
	if t.Config != nil && o.AllowTemplateMounts {
		for _, m := range t.Config.MountPoints {
			if !userRepeats(o, m) {
				p.Warnings = append(p.Warnings, fmt.Sprintf("the template's %s: %s binds host directory %s into the container at %s", m.Key(), m.Value(), m.Volume, m.Path))
			}
		}
	}
	// The template's .conf is for the newest PVE: translate it to what
	// this host's pve-container parses, so that what the preview shows is
	// what is written.
	if p.Config, err = merged.For(p.Container, o.RunAsRoot); err != nil {
		return nil, releaseError(err, p.Container)
	}
	if isApp(merged) {
		hostManagedNetwork(&p.Config, p.Container)
	}
	var ownWarnings []string
	p.own, ownWarnings = planVolumeOwners(p.Config.MountPoints, t.Volumes, p.Container, !h.Remote() && o.Node == "")
	p.Warnings = append(p.Warnings, ownWarnings...)
	p.Create = createOptions(p, o)
	p.Set = mountOptions(p.Config.MountPoints)
	p.Raw = rawLines(p.Config)
	p.password = o.Password
	p.KeepFailed = o.KeepFailed
	p.Start = nil
	if o.Start {
		p.Start = p.startArgv(p.VMID)
	}
	if p.remote != nil {
		p.Create, p.Set, p.Raw = nil, nil, nil
		if err := p.finishRemote(o); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// planLocal checks the node and the storages on the host, and plans
// the template's upload into its storage (or its use where it is).
func (h *Host) planLocal(ctx context.Context, p *Plan, t *Template, o Options, storages []Storage, rootStorage string) error {
	if o.Node != "" {
		nodes, err := h.Nodes(ctx)
		if err != nil {
			return err
		}
		if !slices.Contains(nodes, o.Node) {
			return newError(ErrNotFound, "node", fmt.Sprintf("node '%s' is not in this cluster (it has %s)", o.Node, strings.Join(nodes, ", ")), "name one of them in Node", "Node")
		}
	}
	if err := checkStorage(storages, rootStorage, "rootdir", o.Node, "Storage"); err != nil {
		return err
	}

	// The template: a volume on the host, or a local file to upload.
	if t.VolID != "" {
		p.VolID = t.VolID
		store, _, _ := strings.Cut(t.VolID, ":")
		if err := checkStorage(storages, store, "vztmpl", o.Node, "the template's storage"); err != nil {
			return err
		}
		if _, err := h.TemplatePath(ctx, t.VolID); err != nil {
			return err
		}
	} else {
		ts := cmp.Or(o.TemplateStorage, "local")
		if err := checkStorage(storages, ts, "vztmpl", o.Node, "TemplateStorage"); err != nil {
			return err
		}
		p.VolID = ts + ":vztmpl/" + filepath.Base(t.File)
		dest, err := h.TemplatePath(ctx, p.VolID)
		if err != nil {
			return err
		}
		if p.Upload, err = planUpload(t, dest, o.ReplaceTemplate); err != nil {
			return err
		}
	}
	return nil
}

// validateFlags checks the options and the template; remote (a host
// reached through the API) leaves the host directories to PVE, which are
// not on this machine, and lets a password go to another node in the
// request's body.
func validateFlags(t *Template, o Options, remote bool) error {
	if o.VMID != 0 && (o.VMID < 100 || o.VMID > 999999999) {
		return newError(ErrInvalidArgument, "vmid", fmt.Sprintf("VMID %d is out of range", o.VMID), paramFix["vmid"], "VMID")
	}
	if o.Hostname != "" && !lxc.ValidDNSName(o.Hostname) {
		return newError(ErrInvalidArgument, "hostname", fmt.Sprintf("Hostname %q is not a valid DNS name", o.Hostname), paramFix["hostname"], "Hostname")
	}
	if o.Memory != 0 && o.Memory < 16 {
		return newError(ErrInvalidArgument, "memory", fmt.Sprintf("Memory %d is below PVE's minimum of 16 MiB", o.Memory), paramFix["memory"], "Memory")
	}
	if o.Cores < 0 || o.Cores > 8192 {
		return newError(ErrInvalidArgument, "cores", fmt.Sprintf("Cores %d is out of range", o.Cores), paramFix["cores"], "Cores")
	}
	if o.Password != "" && len(o.Password) < 5 {
		return newError(ErrInvalidArgument, "password", "Password is shorter than 5 characters", paramFix["password"], "Password")
	}
	if strings.ContainsAny(o.Password, "\n\r\x00") {
		return newError(ErrInvalidArgument, "password", "Password contains a line break or NUL, which pct cannot read from its standard input", "choose another password", "Password")
	}
	if o.Password != "" && o.Node != "" && !remote {
		// pvesh has no way to read it from stdin: it would be in argv on
		// this host and, proxied, in the ssh command line to the node.
		return newError(ErrInvalidArgument, "password", "Password cannot be passed to another node (pvesh would take it on its command line, visible in the process list)", "use SSHKeysFile, or run the deploy on that node without Node", "Password", "SSHKeysFile", "Node")
	}
	if o.SSHKeysFile != "" {
		if _, err := os.Stat(o.SSHKeysFile); err != nil {
			return newError(ErrNotFound, "ssh-public-keys", fmt.Sprintf("SSHKeysFile %s cannot be read (%v)", o.SSHKeysFile, err), "give a file of OpenSSH public keys", "SSHKeysFile")
		}
	}
	for _, m := range o.Mounts {
		if err := lxc.CheckBindSource(m.Source); err != nil {
			return newError(ErrInvalidArgument, "mount", "Mounts source "+err.Error(), "write Mounts /host/dir:/ct/dir[:ro]", "Mounts")
		}
		if _, err := lxc.CheckContainerPath(m.Dest); err != nil {
			return newError(ErrInvalidArgument, "mount", fmt.Sprintf("Mounts %s: the destination %v", m.Source, err), "write Mounts /host/dir:/ct/dir[:ro]", "Mounts")
		}
		if remote {
			continue
		}
		if err := checkHostDir(m.Source, "Mounts "+m.Source, "Mounts"); err != nil {
			return err
		}
	}
	// What a template asks for was written by whoever made the template:
	// the checks Mounts gets, and no host system directory.
	if t.Config != nil {
		for _, m := range t.Config.MountPoints {
			what := fmt.Sprintf("the template's %s", m.Key())
			if err := lxc.CheckTemplateBindSource(m.Volume); err != nil {
				return newError(ErrInvalidArgument, "template", what+": the source "+err.Error(), "remove it from the template's .conf and bind the directory with Mounts", "Mounts")
			}
			if _, err := lxc.CheckContainerPath(m.Path); err != nil {
				return newError(ErrInvalidArgument, "template", what+": mp= "+err.Error(), "remove it from the template's .conf")
			}
			if err := checkHostDir(m.Volume, what+" "+m.Volume); err != nil && !remote {
				return err
			}
			// Whoever made the template chose the host directory (another
			// CT's disks, a shared NFS export): only the user binds one.
			if !o.AllowTemplateMounts && !userRepeats(o, m) {
				return newError(ErrInvalidArgument, "template", fmt.Sprintf("%s: %s asks to bind host directory %s into the container at %s", what, m.Value(), m.Volume, m.Path),
					fmt.Sprintf("bind it yourself with Mounts %s:%s%s, or allow it with AllowTemplateMounts", m.Volume, m.Path, map[bool]string{true: ":ro"}[m.RO]), "Mounts", "AllowTemplateMounts")
			}
		}
		for _, r := range t.Config.Raw {
			if err := lxc.CheckTemplateLine(r.Key, r.Value); err != nil {
				return newError(ErrInvalidArgument, "template", fmt.Sprintf("the template's %s: %v", r.Key, err), "remove it from the template's .conf")
			}
		}
	}
	for _, v := range t.Volumes {
		if _, err := lxc.CheckContainerPath(v); err != nil {
			return newError(ErrInvalidArgument, "template", "the template's image volume "+err.Error(), "rebuild it from an image whose VOLUMEs are absolute, clean paths")
		}
	}
	if o.Unprivileged == nil && t.Privileged {
		// Whoever wrote the .json chose that: a privileged container's
		// root is the host's root but for AppArmor, so the user must ask.
		return newError(ErrInvalidArgument, "unprivileged", "the template is privileged-only (its .json says so), and a privileged container's root is root on the host", "deploy it privileged only if you trust the template, with Unprivileged=false", "Unprivileged")
	}
	if o.Unprivileged != nil && *o.Unprivileged && t.Privileged {
		return newError(ErrInvalidArgument, "unprivileged", "the template is privileged-only (it keeps ids above 65535, which an unprivileged container cannot map)", "deploy with Unprivileged=false, or rebuild it with SquashHighIDs", "Unprivileged", "SquashHighIDs")
	}
	return nil
}

// checkHostDir is what PVE checks of a bind mount's host directory when
// the container starts (an existing directory, reached without a
// symlink), done before anything changes; the real path must pass
// CheckBindSource too.
func checkHostDir(p, what string, fields ...string) error {
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return newError(ErrNotFound, "mount", what+": the host directory does not exist", "create it first, or fix the path", fields...)
	case fi.Mode()&os.ModeSymlink != 0:
		return newError(ErrInvalidArgument, "mount", what+" is a symlink, which PVE refuses as a bind source", "name the real directory", fields...)
	case !fi.IsDir():
		return newError(ErrInvalidArgument, "mount", what+" is not a directory", "bind-mount a directory", fields...)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil || real != p {
		return newError(ErrInvalidArgument, "mount", fmt.Sprintf("%s: a symlink on the way leads to %s, which PVE refuses as a bind source", what, real), "name the real directory", fields...)
	}
	return nil
}

func planUpload(t *Template, dest string, replace bool) (*Upload, error) {
	u := &Upload{From: t.File, To: dest, Sidecars: t.Sidecars}
	if _, err := os.Stat(dest); err != nil {
		return u, nil
	}
	have, err := fileSHA256(dest)
	if err != nil {
		return nil, err
	}
	want := t.SHA256
	if want == "" {
		if want, err = fileSHA256(t.File); err != nil {
			return nil, err
		}
	}
	switch {
	case have == want:
		u.Skip = true
	case !replace:
		return nil, newError(ErrAlreadyExists, "template", fmt.Sprintf("a different template named %s is already on the host (%s)", filepath.Base(dest), dest), "rename yours, or overwrite it with ReplaceTemplate", "ReplaceTemplate")
	}
	return u, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkStorage checks the storage that field (an Options field, or
// another description) names.
func checkStorage(storages []Storage, name, content, node, field string) error {
	for _, s := range storages {
		if s.Name != name {
			continue
		}
		switch {
		case s.Disable != 0:
			return newError(ErrStorage, "storage", fmt.Sprintf("storage '%s' (%s) is disabled", name, field), fmt.Sprintf("enable it (`pvesm set %s --disable 0`) or choose another", name), fieldsOf(field)...)
		case !s.OnNode(node):
			return newError(ErrStorage, "storage", fmt.Sprintf("storage '%s' (%s) is not available on node '%s'", name, field, node), "choose a storage of that node", fieldsOf(field)...)
		case !s.Holds(content):
			return newError(ErrStorage, "storage", fmt.Sprintf("storage '%s' (%s) does not hold %s content (it holds %s)", name, field, content, s.Content), "choose a storage whose content includes "+content, fieldsOf(field)...)
		}
		return nil
	}
	var names []string
	for _, s := range storages {
		if s.Holds(content) && s.Disable == 0 && s.OnNode(node) {
			names = append(names, s.Name)
		}
	}
	return newError(ErrNotFound, "storage", fmt.Sprintf("storage '%s' (%s) does not exist", name, field), "use one that holds "+content+": "+strings.Join(names, ", "), fieldsOf(field)...)
}

// mergedConfig is the template's .conf with the flags applied (flags win).
func mergedConfig(t *Template, o Options, rootStorage string) lxc.Config {
	var c lxc.Config
	if t.Config != nil {
		c = *t.Config
	}
	c.Unprivileged = !t.Privileged
	if o.Unprivileged != nil {
		c.Unprivileged = *o.Unprivileged
	}
	if o.Hostname != "" {
		c.Hostname = o.Hostname
	}
	c.Options = nil
	add := func(k, v string) {
		if v != "" && v != "0" {
			c.Options = append(c.Options, lxc.Option{Key: k, Value: v})
		}
	}
	add("memory", strconv.Itoa(o.Memory))
	if o.Swap != nil {
		// 0 is a value here (no swap), not "unset".
		c.Options = append(c.Options, lxc.Option{Key: "swap", Value: strconv.Itoa(*o.Swap)})
	}
	add("cores", strconv.Itoa(o.Cores))
	add("net0", cmp.Or(o.Net0, "name=eth0,bridge=vmbr0,ip=dhcp"))
	add("rootfs", fmt.Sprintf("%s:%d", rootStorage, orDefault(o.RootfsSize, 8)))
	add("features", o.Features)
	c.Description = cmp.Or(o.Description, c.Description)
	return c
}

func createOptions(p *Plan, o Options) []string {
	c := p.Config
	var a []string
	add := func(k, v string) {
		if v != "" {
			a = append(a, "--"+k, v)
		}
	}
	baseParams(c, add)
	if o.Password != "" {
		// pct's interactive parameter: with an empty value it reads
		// the password (twice) from its standard input.
		a = append(a, "--password=")
	}
	add("ssh-public-keys", o.SSHKeysFile)
	add("description", c.Description)
	// Empty on a PVE without the key: For made it lxc.init.cmd.
	add("entrypoint", c.Entrypoint)
	add("cmode", c.Cmode)
	// No --env: PVE's env is one NUL-separated value, which an argv
	// cannot hold, and pct keeps only the last of repeated --env options.
	// The variables are written as PVE itself stores them instead, one
	// lxc.environment.runtime line each (rawLines).
	return append(a, o.Extra...)
}

// baseParams gives add the create parameters that lead both pct's argv
// and the API's form, in pct's order.
func baseParams(c lxc.Config, add func(k, v string)) {
	add("hostname", c.Hostname)
	for _, opt := range c.Options {
		add(opt.Key, opt.Value)
	}
	add("ostype", c.OSType)
	add("arch", c.Arch)
	add("unprivileged", map[bool]string{true: "1", false: "0"}[c.Unprivileged])
}

// isApp reports an application container: an entrypoint other than
// /sbin/init, as PVE's OCI import tells them apart.
func isApp(c lxc.Config) bool {
	args := lxc.SplitCommand(c.Entrypoint)
	return len(args) > 0 && args[0] != "/sbin/init"
}

// appDefaults gives an application container the stop signal PVE's own
// OCI import gives it when the image names none: SIGTERM, which apps
// handle, where LXC's default SIGPWR kills most of them uncleanly.
func hasRaw(c lxc.Config, key string) bool {
	for _, r := range c.Raw {
		if r.Key == key {
			return true
		}
	}
	return false
}

func appDefaults(c *lxc.Config) {
	if !isApp(*c) {
		return
	}
	for _, r := range c.Raw {
		if r.Key == "lxc.signal.halt" {
			return
		}
	}
	c.Raw = append(append([]lxc.Option(nil), c.Raw...), lxc.Option{Key: "lxc.signal.halt", Value: "SIGTERM"})
}

// hostManagedNetwork does what PVE's own OCI import does for an
// application container (an entrypoint other than /sbin/init): no init
// inside configures the network, so every netN without a host-managed
// setting gets host-managed=1 and the host configures it (DHCP included).
// PVE before 9.1 has no such option.
func hostManagedNetwork(c *lxc.Config, v lxc.PVEContainer) {
	if !v.AppContainers() {
		return
	}
	for i, opt := range c.Options {
		if strings.HasPrefix(opt.Key, "net") && !strings.Contains(","+opt.Value, ",host-managed=") {
			c.Options[i].Value += ",host-managed=1"
		}
	}
}

// mountPoints are the container's mpN: binds from the template's config
// and --mount, then a storage volume per image VOLUME, numbered from 0.
func mountPoints(t *Template, o Options, rootStorage string) ([]lxc.MountPoint, error) {
	var mps []lxc.MountPoint
	if t.Config != nil {
		for _, m := range t.Config.MountPoints {
			if !userRepeats(o, m) { // else --mount below adds it
				mps = append(mps, m)
			}
		}
	}
	for _, m := range o.Mounts {
		mps = append(mps, lxc.MountPoint{Volume: m.Source, Path: m.Dest, RO: m.RO})
	}
	for _, v := range t.Volumes {
		mps = append(mps, lxc.MountPoint{Volume: fmt.Sprintf("%s:%d", rootStorage, orDefault(o.VolumeSize, 8)), Path: v})
	}
	if len(mps) > 256 {
		return nil, newError(ErrInvalidArgument, "mount", fmt.Sprintf("%d mount points: PVE allows mp0 to mp255", len(mps)), "drop some Mounts", "Mounts")
	}
	for i := range mps {
		mps[i].Index = i
	}
	return mps, nil
}

// userRepeats reports whether a --mount asks for the template's bind
// mount m: same host directory and container path.
func userRepeats(o Options, m lxc.MountPoint) bool {
	for _, u := range o.Mounts {
		if filepath.Clean(u.Source) == filepath.Clean(m.Volume) && filepath.Clean(u.Dest) == filepath.Clean(m.Path) {
			return true
		}
	}
	return false
}

// mountOptions are the mpN options of the pct set after the create.
func mountOptions(mps []lxc.MountPoint) []string {
	if len(mps) == 0 {
		return nil
	}
	var a []string
	for _, m := range mps {
		a = append(a, "--"+m.Key(), m.Value())
	}
	return a
}

// rawLines are the lines appended to the config file, in the order
// Config.Render shows them: the environment as PVE stores it
// (lxc.environment.runtime), then the other raw LXC keys.
func rawLines(c lxc.Config) []string {
	var out []string
	for _, e := range c.Env {
		out = append(out, "lxc.environment.runtime: "+e)
	}
	for _, r := range c.Raw {
		out = append(out, r.Key+": "+r.Value)
	}
	return out
}

// releaseError names what the host's PVE cannot take and the way out.
func releaseError(err error, have lxc.PVEContainer) error {
	var ee *lxc.EnvReleaseError
	if errors.As(err, &ee) {
		return newError(ErrInvalidArgument, "drop-env",
			fmt.Sprintf("the image sets environment variables (%s), and pve-container %s (PVE 9.0) can pass them only as plain lxc.environment, which LXC also gives the hooks PVE runs as root on the host: PVE 9.1 (pve-container 6.0.18) adds lxc.environment.runtime, which keeps them inside the container", strings.Join(ee.Names, ", "), have),
			"upgrade the host to PVE 9.1 or later, or use DropEnv to leave the image's environment out of the container", "DropEnv")
	}
	var ne *lxc.EnvError
	if errors.As(err, &ne) {
		return newError(ErrInvalidArgument, "template", "the template's "+ne.Error(), "rebuild the template giving the variable a name of letters, digits and '_'")
	}
	var re *lxc.ReleaseError
	if !errors.As(err, &re) {
		return err
	}
	switch re.Key {
	case "lxc.init.uid", "lxc.init.gid", "lxc.init.groups":
		return newError(ErrInvalidArgument, "run-as-root",
			fmt.Sprintf("the template runs its entrypoint as a user (%s: %s), and pve-container %s refuses %s: PVE knows it from pve-container 6.1.0 (PVE 9.2) on", re.Key, re.Value, have, re.Key),
			"upgrade the host to PVE 9.2 or later, or use RunAsRoot to run the entrypoint as root", "RunAsRoot")
	}
	return newError(ErrInvalidArgument, "template", fmt.Sprintf("the template's config holds %s, which pve-container %s refuses (%v)", re.Key, have, err), "upgrade the host's PVE")
}

// KeptError is a deploy that failed after its container was created,
// which was kept as it is because the Plan's KeepFailed asked for it.
type KeptError struct {
	Err  error // why the set-up failed
	VMID int
}

func (e *KeptError) Error() string {
	return fmt.Sprintf("%v (CT %d was kept as it is, as asked; remove it with `pct destroy %d --purge`)", e.Err, e.VMID, e.VMID)
}

// Unwrap returns the cause.
func (e *KeptError) Unwrap() error { return e.Err }

// Result is what a deploy did.
type Result struct {
	VMID     int      `json:"vmid"`
	Node     string   `json:"node,omitempty"`
	VolID    string   `json:"template"`
	Uploaded bool     `json:"uploaded"`
	Started  bool     `json:"started"`
	Commands []string `json:"commands"`
}

// Deploy carries out a plan. Once the container exists, any failure
// destroys it again (unless p.KeepFailed), so nothing half-made is left.
func Deploy(ctx context.Context, h *Host, p *Plan) (*Result, error) {
	if (p.remote != nil) != h.Remote() {
		return nil, newError(ErrInvalidArgument, "", "the plan was made for another kind of host (through the API, or on the host)", "make the plan with the host that deploys it")
	}
	if h.Remote() {
		return h.deployRemote(ctx, p)
	}
	res := &Result{Node: p.Node, VolID: p.VolID}
	if p.Upload != nil && !p.Upload.Skip {
		if err := upload(p.Upload); err != nil {
			return nil, err
		}
		res.Uploaded = true
	}
	stdin := ""
	if p.password != "" {
		stdin = p.password + "\n" + p.password + "\n"
	}
	err := p.createRetrying(ctx, h, ErrAlreadyExists, func() error {
		_, err := h.runInput(ctx, stdin, p.createArgv(p.VMID)...)
		return err
	})
	res.VMID = p.VMID
	res.Commands = p.Commands()
	if err != nil {
		return nil, err
	}
	mounting := false
	undo := p.undoer(ctx, "", func(ctx context.Context) error {
		// PVE refuses the destroy while pct mount's lock stays.
		if mounting {
			if err := h.releaseMount(ctx, p.VMID, nil); err != nil {
				return err
			}
		}
		_, err := h.run(ctx, p.destroyArgv(p.VMID)...)
		return err
	})
	if p.Set != nil {
		if _, err := h.run(ctx, p.setArgv(p.VMID)...); err != nil {
			return nil, undo(err)
		}
	}
	if err := h.ownVolumes(ctx, p.VMID, p.own, nil, &mounting); err != nil {
		return nil, undo(err)
	}
	if err := h.AppendRaw(p.VMID, p.Node, p.Raw); err != nil {
		return nil, undo(err)
	}
	if p.Start != nil {
		if _, err := h.run(ctx, p.startArgv(p.VMID)...); err != nil {
			return nil, undo(err)
		}
		res.Started = true
	}
	return res, nil
}

// createRetrying runs create, which creates CT p.VMID, and when the plan
// chose the VMID itself and create fails with taken (the VMID exists),
// again with the next free one, up to 5 times: the next free VMID is not
// reserved, so another create may take it between nextid and ours.
func (p *Plan) createRetrying(ctx context.Context, h *Host, taken error, create func() error) error {
	for attempt := 0; ; attempt++ {
		err := create()
		if err == nil || !errors.Is(err, taken) || !p.autoVMID || attempt >= 5 {
			return err
		}
		if p.VMID, err = h.NextID(ctx); err != nil {
			return err
		}
	}
}

// undoer is what a deploy returns when a step after the create fails:
// the cause, with the half-made CT destroyed again by destroy (which runs
// even when ctx is canceled) unless KeepFailed. where names the node for
// the hint when the CT may be on another one.
func (p *Plan) undoer(ctx context.Context, where string, destroy func(context.Context) error) func(cause error) error {
	return func(cause error) error {
		if p.KeepFailed {
			return &KeptError{Err: cause, VMID: p.VMID}
		}
		if derr := destroy(context.WithoutCancel(ctx)); derr != nil {
			return fmt.Errorf("%w; destroying the half-made CT %d failed too (%v): remove it with `pct destroy %d --purge`%s", cause, p.VMID, derr, p.VMID, where)
		}
		return fmt.Errorf("%w (CT %d was destroyed again: nothing was left behind)", cause, p.VMID)
	}
}

func upload(u *Upload) error {
	dir := filepath.Dir(u.To)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return newError(ErrStorage, "template-storage", fmt.Sprintf("cannot create %s: %v", dir, err), "check the template storage's path")
	}
	// Every file is copied under a temporary name before any is put in
	// place: a failed copy (a full storage, say) then leaves neither a
	// template without its sidecars nor an older template beside the new
	// one's sidecars.
	var staged []*atomicfile.File
	defer func() {
		for _, f := range staged {
			f.Abort()
		}
	}()
	// A template uploaded under another name (upgrade's NAME-<sha12>)
	// takes its sidecars along under that name.
	fromConf, fromJSON := template.SidecarPaths(u.From)
	toConf, toJSON := template.SidecarPaths(u.To)
	for _, from := range append(append([]string(nil), u.Sidecars...), u.From) {
		to := filepath.Join(dir, filepath.Base(from))
		switch from {
		case u.From:
			to = u.To
		case fromConf:
			to = toConf
		case fromJSON:
			to = toJSON
		}
		f, err := stageCopy(from, to)
		if err != nil {
			return err
		}
		staged = append(staged, f)
	}
	// Sidecars first: a template without its sidecars would look like one
	// nexcage did not build.
	for _, f := range staged {
		if err := f.Commit(); err != nil {
			return newError(ErrStorage, "template-storage", err.Error(), "check the template storage's permissions and free space")
		}
	}
	return nil
}

// stageCopy copies from into a temporary file beside to, left for the
// caller to commit or abort.
func stageCopy(from, to string) (*atomicfile.File, error) {
	in, err := os.Open(from)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := atomicfile.Create(to, 0o644)
	if err != nil {
		return nil, newError(ErrStorage, "template-storage", err.Error(), "check the template storage's permissions and free space")
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Abort()
		return nil, newError(ErrStorage, "template-storage", fmt.Sprintf("copy %s to %s: %v", from, to, err), "check free space in the template storage")
	}
	return out, nil
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// Argvs are the PVE commands the plan runs, in order (create, set,
// start), each as an argv.
func (p *Plan) Argvs() [][]string {
	out := [][]string{p.createArgv(p.VMID)}
	if p.Set != nil {
		out = append(out, p.setArgv(p.VMID))
	}
	out = append(out, ownArgvs(p.VMID, p.own)...)
	if p.Start != nil {
		out = append(out, p.startArgv(p.VMID))
	}
	return out
}

// fieldsOf is field as Error.Fields: none when it is a description, not
// an Options field.
func fieldsOf(field string) []string {
	if strings.ContainsAny(field, " '") {
		return nil
	}
	return []string{field}
}
