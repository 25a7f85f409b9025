package pct

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pveapi"
)

// RemoteExecError is an upgrade through the API asked to run a health
// command: PVE's API has no way to run a command in a container.
type RemoteExecError struct {
	Cmd string
}

func (e *RemoteExecError) Error() string {
	return "the health command cannot run through PVE's API: it has no call that runs a command in a container (pct exec is lxc-attach on the node; the API offers only interactive consoles, vncproxy and termproxy)"
}

// Is makes a RemoteExecError an ErrInvalidArgument.
func (e *RemoteExecError) Is(target error) bool { return target == ErrInvalidArgument }

// remoteUpgrade is what an upgrade through the API needs besides the plan.
type remoteUpgrade struct {
	node string
	// digest is the config's when planned: every change is refused when
	// it differs (PVE's digest and target-digest parameters).
	digest string
	conf   map[string]string // the config as GET answered it when planned
	// tmplStorage is the storage the template is uploaded to; sha256
	// is the template's, which PVE verifies.
	tmplStorage, sha256 string
	// set are the keys the swap writes besides rootfs and unusedN (the
	// description with the new marker, env, entrypoint, delete), in
	// setKeys' order; restore puts them back.
	set, restore url.Values
}

// readUpgradeConfig is the container's config as its file has it: read
// on the host, or rendered from GET .../config through the API (which
// also refuses what the API cannot do before anything is asked to change).
func (h *Host) readUpgradeConfig(ctx context.Context, p *UpgradePlan) ([]byte, error) {
	if !h.Remote() {
		raw, err := os.ReadFile(p.path)
		if err != nil {
			return nil, newError(ErrNotFound, "vmid", fmt.Sprintf("CT %d has no config on this node (%v)", p.VMID, err), "check the VMID with `pct list`")
		}
		return raw, nil
	}
	if p.HealthCmd != "" {
		return nil, &RemoteExecError{Cmd: p.HealthCmd}
	}
	rs, err := h.Resources(ctx)
	if err != nil {
		return nil, err
	}
	node := ""
	for _, r := range rs {
		if r.VMID == p.VMID && r.Type == "lxc" {
			node = r.Node
		}
	}
	if node == "" {
		return nil, newError(ErrNotFound, "vmid", fmt.Sprintf("CT %d is not a container of this cluster", p.VMID), "check the VMID among the cluster's containers")
	}
	conf, err := h.api.LXCConfig(ctx, node, p.VMID)
	if err != nil {
		return nil, err
	}
	p.remote = &remoteUpgrade{node: node, digest: conf["digest"], conf: conf}
	if conf["parent"] != "" {
		// The API's config is the current one: a parent is a snapshot.
		return nil, errSnapshots(p.VMID)
	}
	text, err := configText(conf)
	if err != nil {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d's config from the API cannot be read: %v", p.VMID, err), "check it with `pct config` on the node")
	}
	return []byte(text), nil
}

func errSnapshots(vmid int) error {
	return newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d has snapshots, which name its current rootfs", vmid), "delete them (`pct delsnapshot`) first")
}

var apiKeyRE = regexp.MustCompile(`^[a-z][a-z_-]*\d*$`)

// configText renders GET .../config as PVE's config file: the
// description as "#" lines encode_text'ed as write_pct_config writes them
// (the API's description is decoded; a '%' or ':' in it must read back
// unchanged), the keys, env as lxc.environment.runtime
// lines (PVE's parser joins those into env), the raw lxc lines. The
// answer is the server's: a key or value that would make more lines
// than it is one is refused.
func configText(conf map[string]string) (string, error) {
	var b strings.Builder
	if d := strings.TrimRight(conf["description"], "\n"); d != "" {
		for _, l := range strings.Split(d, "\n") {
			b.WriteString("#" + lxc.EncodeText(l) + "\n")
		}
	}
	line := func(k, v string) error {
		if strings.ContainsAny(k+v, "\r\n\x00") {
			return fmt.Errorf("%s has a line break", k)
		}
		fmt.Fprintf(&b, "%s: %s\n", k, v)
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(conf)) {
		switch k {
		case "description", "digest", "lxc", "env":
			continue
		}
		if !apiKeyRE.MatchString(k) {
			return "", fmt.Errorf("%q is not a config key", k)
		}
		if err := line(k, conf[k]); err != nil {
			return "", err
		}
	}
	if env := conf["env"]; env != "" {
		for _, e := range strings.Split(env, "\x00") {
			if err := line("lxc.environment.runtime", e); err != nil {
				return "", err
			}
		}
	}
	if raw := conf["lxc"]; raw != "" {
		var pairs [][]string
		if err := json.Unmarshal([]byte(raw), &pairs); err != nil {
			return "", fmt.Errorf("lxc is not a list of [key, value]: %v", err)
		}
		for _, kv := range pairs {
			if len(kv) != 2 || !strings.HasPrefix(kv[0], "lxc.") {
				return "", fmt.Errorf("lxc has an entry %q that is not [lxc.KEY, value]", kv)
			}
			if err := line(kv[0], kv[1]); err != nil {
				return "", err
			}
		}
	}
	return b.String(), nil
}

// planUpgradeTemplateRemote plans the new template on the CT's node: a
// local file uploaded to the storage the old one is on (or reused there:
// same name and size), under a name with its digest when a different
// file has its name. A template volume cannot be upgraded to: the API
// cannot read its .conf and .json, which the merge needs.
func (h *Host) planUpgradeTemplateRemote(ctx context.Context, p *UpgradePlan, t *Template, o UpgradeOptions) error {
	r := p.remote
	if t.VolID != "" {
		return newError(ErrInvalidArgument, "template", fmt.Sprintf("template %s is on a storage, whose .conf and .json (the image's entrypoint, environment and volumes, which the upgrade merges) the API cannot read", t.VolID), "upgrade to the local template file, or to the image")
	}
	old, _, _ := strings.Cut(p.From.Template, ":")
	r.tmplStorage = cmp.Or(o.TemplateStorage, old, "local")
	storages, err := h.Storages(ctx)
	if err != nil {
		return err
	}
	if err := checkStorage(storages, r.tmplStorage, "vztmpl", r.node, "TemplateStorage"); err != nil {
		return err
	}
	fi, err := os.Stat(t.File)
	if err != nil {
		return newError(ErrNotFound, "template", fmt.Sprintf("template %s cannot be read: %v", t.File, err), "build it first")
	}
	if r.sha256 = t.SHA256; r.sha256 == "" {
		if r.sha256, err = fileSHA256(t.File); err != nil {
			return err
		}
	}
	name := filepath.Base(t.File)
	for try := 0; ; try++ {
		p.VolID = r.tmplStorage + ":vztmpl/" + name
		p.Upload = &Upload{From: t.File, To: p.VolID}
		have, err := h.remoteVolume(ctx, r.node, p.VolID)
		if err != nil {
			return err
		}
		// The API cannot read a stored file's checksum back: its name and
		// size must do, as for deploy, but the old template of that name
		// with another digest is known to differ.
		same := have != nil && int64(have.Size) == fi.Size() && !(p.VolID == p.From.Template && p.From.Digest != t.Digest)
		switch {
		case have == nil:
			return nil
		case same && !o.ReplaceTemplate:
			p.Upload.Skip = true
			return nil
		case o.ReplaceTemplate && p.VolID != p.From.Template:
			return nil
		case try == 0:
			// A re-pulled tag builds a template of the old one's name:
			// overwriting it would change what other CTs came from.
			name = digestName(name, r.sha256)
			continue
		}
		return newError(ErrAlreadyExists, "template", fmt.Sprintf("a different template named %s is already on storage '%s'", name, r.tmplStorage), "remove it from the storage")
	}
}

// finishRemoteUpgrade turns the merge into the swap's API parameters:
// the environment and the entrypoint are API keys from PVE 9.1; the raw
// keys (cwd, user, stop signal; the entrypoint before 9.1) only root@pam
// writes on the host, so a merge that changes them is a *RawLinesError.
func (p *UpgradePlan) finishRemoteUpgrade(cur *lxc.Config, v Version, cv lxc.PVEContainer) error {
	r := p.remote
	var env, changed []string
	want := map[string]string{}
	for _, l := range p.raw {
		k, val, _ := strings.Cut(l, ": ")
		if k == "lxc.environment.runtime" {
			env = append(env, val)
		} else {
			want[k] = val
		}
	}
	for _, k := range managedRaw {
		if want[k] != rawValue(cur, k) && want[k] != "" {
			changed = append(changed, k+": "+want[k])
		} else if want[k] != rawValue(cur, k) {
			changed = append(changed, k+": (removed)")
		}
	}
	if !slices.Equal(env, cur.Env) && !cv.AppContainers() {
		for _, e := range env {
			changed = append(changed, "lxc.environment.runtime: "+e)
		}
	}
	if len(changed) > 0 {
		return &RawLinesError{Lines: changed, Version: v}
	}
	r.set, r.restore = url.Values{}, url.Values{}
	var del, undel []string
	oldDesc := strings.TrimRight(r.conf["description"], "\n")
	desc := describe(oldDesc, p.To)
	if p.marker != "" {
		// The marker line is replaced where it is, found as the host
		// finds it (parsed, so spacing does not matter); one not found
		// (a field added by hand) leaves the new marker appended, as on
		// the host: it is the last, which counts.
		lines := strings.Split(oldDesc, "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if isMarkerLine("#"+lines[i], p.From) {
				lines[i] = p.newMarker
				desc = strings.Join(lines, "\n")
				break
			}
		}
	}
	r.set.Set("description", desc)
	if oldDesc != "" {
		r.restore.Set("description", oldDesc)
	} else {
		undel = append(undel, "description")
	}
	if !slices.Equal(env, cur.Env) {
		if len(env) == 0 {
			del = append(del, "env")
		} else {
			r.set.Set("env", strings.Join(env, "\x00"))
		}
		if len(cur.Env) == 0 {
			undel = append(undel, "env")
		} else {
			r.restore.Set("env", strings.Join(cur.Env, "\x00"))
		}
	}
	if p.entrypoint != nil {
		if *p.entrypoint == "" {
			del = append(del, "entrypoint")
		} else {
			r.set.Set("entrypoint", *p.entrypoint)
		}
		if cur.Entrypoint == "" {
			undel = append(undel, "entrypoint")
		} else {
			r.restore.Set("entrypoint", cur.Entrypoint)
		}
	}
	if len(del) > 0 {
		r.set.Set("delete", strings.Join(del, ","))
	}
	if len(undel) > 0 {
		r.restore.Set("delete", strings.Join(undel, ","))
	}
	return nil
}

// remoteRunning is whether a container runs, as the cluster reports it.
func (h *Host) remoteRunning(ctx context.Context, vmid int) (bool, error) {
	rs, err := h.Resources(ctx)
	if err != nil {
		return false, err
	}
	for _, r := range rs {
		if r.VMID == vmid && r.Type == "lxc" {
			return r.Status == "running", nil
		}
	}
	return false, newError(ErrNotFound, "vmid", fmt.Sprintf("CT %d is not a container of this cluster", vmid), "check the VMID among the cluster's containers")
}

// apiReq is one request of a remote upgrade, as --dry-run shows it.
type apiReq struct {
	method, path string
	keys         []string
	v            url.Values
}

func (q apiReq) String() string { return formLine(q.method, q.path, q.keys, q.v) }

func (p *UpgradePlan) ctPath(vmid int, sub string) string {
	return fmt.Sprintf("/nodes/%s/lxc/%d%s", p.remote.node, vmid, sub)
}

func (p *UpgradePlan) tmpCreateReq() apiReq {
	v := url.Values{"vmid": {p.tmp()}, "ostemplate": {p.VolID}, "rootfs": {p.storage + ":" + p.size},
		"unprivileged": {pveapi.FormBool(p.unprivileged)}, "hostname": {fmt.Sprintf("nexcage-upgrade-%d", p.VMID)}}
	keys := []string{"vmid", "ostemplate", "rootfs", "unprivileged", "hostname"}
	for _, kv := range [][2]string{{"ostype", p.ostype}, {"arch", p.arch}} {
		if kv[1] != "" {
			v.Set(kv[0], kv[1])
			keys = append(keys, kv[0])
		}
	}
	return apiReq{"POST", "/nodes/" + p.remote.node + "/lxc", keys, v}
}

func (p *UpgradePlan) moveOutReq() apiReq {
	return apiReq{"POST", p.ctPath(p.TempVMID, "/move_volume"), []string{"volume", "storage"}, url.Values{"volume": {"rootfs"}, "storage": {p.storage}}}
}

func (p *UpgradePlan) handOverReq() apiReq {
	return apiReq{"POST", p.ctPath(p.TempVMID, "/move_volume"), []string{"volume", "target-vmid", "target-volume", "target-digest"},
		url.Values{"volume": {"unused0"}, "target-vmid": {p.vmid()}, "target-volume": {p.unusedKey}, "target-digest": {p.remote.digest}}}
}

func (p *UpgradePlan) destroyTmpReq() apiReq {
	return apiReq{"DELETE", p.ctPath(p.TempVMID, ""), []string{"purge"}, url.Values{"purge": {"1"}}}
}

func (p *UpgradePlan) powerReq(action string) apiReq {
	q := apiReq{"POST", p.ctPath(p.VMID, "/status/"+action), nil, url.Values{}}
	if action == "shutdown" {
		q.keys, q.v = []string{"forceStop"}, url.Values{"forceStop": {"1"}}
	}
	return q
}

// swapReq is the one config write that makes the new volume the rootfs
// and keeps the old one as unusedN, with the merged keys and the new
// marker, refused by PVE if the config changed since digest.
func (p *UpgradePlan) swapReq(newVol, digest string) apiReq {
	v := url.Values{"rootfs": {p.rootfsWith(newVol)}, p.unusedKey: {p.oldVol}}
	keys := []string{"rootfs", p.unusedKey}
	for _, k := range sortedKeys(p.remote.set) {
		v[k] = p.remote.set[k]
		keys = append(keys, k)
	}
	v.Set("digest", digest)
	return apiReq{"PUT", p.ctPath(p.VMID, "/config"), append(keys, "digest"), v}
}

// volumesReqs add the new image's volumes (newVolumes.add) after the
// swap, as the host's `pct set --mpN STORAGE:SIZE,mp=PATH`: PVE's
// update_vm allocates an mpN whose volume is STORAGE:SIZE on an existing
// CT (vmconfig_apply_pending, apply_pending_mountpoint, create_disks;
// Datastore.AllocateSpace on the storage), keepattrs=1 included on
// pve-container 6.1 on. One write per volume, none in the swap's:
// update_vm dies before writing the config when any key of the write
// failed, and a volume allocated for another key of it would then be
// named by no config; alone, a failed allocation is freed by create_disks.
func (p *UpgradePlan) volumesReqs() []apiReq {
	var out []apiReq
	for _, m := range p.vols.add {
		out = append(out, apiReq{"PUT", p.ctPath(p.VMID, "/config"), []string{m.Key()}, url.Values{m.Key(): {m.Value()}}})
	}
	return out
}

// deleteReq is a config write deleting key (a mount point leaves its
// volume as an unusedM, an unusedM frees its volume).
// The digest is the config's as read just before: PVE refuses the write
// if it changed since.
func (p *UpgradePlan) deleteReq(key, digest string) apiReq {
	return apiReq{"PUT", p.ctPath(p.VMID, "/config"), []string{"delete", "digest"}, url.Values{"delete": {key}, "digest": {digest}}}
}

// remoteUpgradeCommands are the upgrade's API requests for --dry-run.
func (p *UpgradePlan) remoteUpgradeCommands() []string {
	var out []string
	if u := p.Upload; u != nil {
		if u.Skip {
			out = append(out, fmt.Sprintf("# %s is already on node %s (same name and size): reused, not uploaded", u.To, p.remote.node))
		} else {
			_, file, _ := strings.Cut(u.To, ":vztmpl/")
			out = append(out, formLine("POST", fmt.Sprintf("/nodes/%s/storage/%s/upload", p.remote.node, p.remote.tmplStorage), []string{"content", "filename", "checksum-algorithm", "checksum"},
				url.Values{"content": {"vztmpl"}, "filename": {file}, "checksum-algorithm": {"sha256"}, "checksum": {p.remote.sha256}}))
		}
	}
	reqs := []apiReq{p.tmpCreateReq(), p.moveOutReq(), p.handOverReq(), p.destroyTmpReq()}
	if p.Running {
		reqs = append(reqs, p.powerReq("shutdown"))
	}
	reqs = append(reqs, p.swapReq(cmp.Or(p.newVol, p.storage+":NEWVOL"), "DIGEST"))
	reqs = append(append(reqs, p.volumesReqs()...), p.powerReq("start"))
	if !p.Running {
		reqs = append(reqs, p.powerReq("shutdown"))
	}
	reqs = append(reqs, p.deleteReq(p.unusedKey, "DIGEST"))
	for _, q := range reqs {
		out = append(out, q.String())
	}
	return out
}

// upgradeRemote is Upgrade through the API. The old rootfs is kept as
// unusedN until the new one has started; any failure puts back rootfs,
// unusedN and the keys the swap wrote, frees the new volume, destroys
// the temporary CT and starts the container again if it ran; the config
// is then read back and compared with the one planned.
func (h *Host) upgradeRemote(ctx context.Context, p *UpgradePlan, res *UpgradeResult) (*UpgradeResult, error) {
	if !h.Remote() {
		return nil, newError(ErrInvalidArgument, "", "the upgrade was planned through the API, and this host is reached through its tools", "carry it out with the host it was planned with")
	}
	c, r := h.api, p.remote
	node := r.node
	var pending string // the UPID of a task whose end was not seen
	now, err := c.LXCConfig(ctx, node, p.VMID)
	if err != nil {
		return nil, err
	}
	if now["digest"] != r.digest {
		return nil, newError(ErrInvalidArgument, "vmid", fmt.Sprintf("CT %d's config changed since the upgrade was planned", p.VMID), "plan it again")
	}
	if p.Running, err = h.remoteRunning(ctx, p.VMID); err != nil {
		return nil, err
	}
	if p.Upload != nil && !p.Upload.Skip {
		upid, err := c.UploadTemplate(ctx, node, r.tmplStorage, p.Upload.From, r.sha256)
		if err == nil {
			_, err = c.WaitTask(ctx, node, upid)
		}
		if err != nil {
			return nil, err
		}
	}
	// do sends one request, waiting for its task when it has one.
	do := func(ctx context.Context, q apiReq, record bool) error {
		if record {
			res.Commands = append(res.Commands, q.String())
		}
		var upid string
		var err error
		switch {
		case q.method == "PUT":
			return c.SetLXCConfig(ctx, node, p.VMID, q.v)
		case q.method == "DELETE":
			upid, err = c.Destroy(ctx, node, p.TempVMID, true)
		case strings.HasSuffix(q.path, "/lxc"):
			upid, err = c.CreateLXC(ctx, node, q.v)
		case strings.HasSuffix(q.path, "/move_volume"):
			upid, err = c.MoveVolume(ctx, node, p.TempVMID, q.v)
		case strings.HasSuffix(q.path, "/status/start"):
			upid, err = c.Start(ctx, node, p.VMID)
		case strings.HasSuffix(q.path, "/status/stop"):
			upid, err = c.Stop(ctx, node, p.VMID)
		case strings.HasSuffix(q.path, "/status/shutdown"):
			upid, err = c.Shutdown(ctx, node, p.VMID, true)
		default:
			return fmt.Errorf("no such request: %s", q)
		}
		if err == nil {
			if _, err = c.WaitTask(ctx, node, upid); err != nil && !isTaskError(err) {
				// Its end was not seen (a poll error, a timeout, Ctrl-C):
				// the task may still be running, and making something.
				pending = upid
			}
		}
		return err
	}
	var tmpMade, createUnseen, handUnseen, handed, swapSent, swapped, volsSent, stopped, started bool
	fail := func(step string, cause error) error {
		bg := context.WithoutCancel(ctx)
		var errs []error
		try := func(q apiReq) {
			if err := do(bg, q, false); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", q, err))
			}
		}
		// Nothing is undone while a task of the upgrade may still run:
		// its end decides what it made.
		if upid := pending; upid != "" {
			pending = ""
			wctx, cancel := context.WithTimeout(bg, createUndoWait)
			_, err := c.WaitTask(wctx, node, upid)
			cancel()
			if err != nil && !isTaskError(err) {
				errs = append(errs, fmt.Errorf("task %s did not end: %w", upid, err))
			}
		}
		if createUnseen {
			// A create whose end was not seen: the temporary CT is ours
			// when it has the hostname the create gave it.
			tmpMade = h.isUpgradeTmp(bg, p)
		}
		if handUnseen {
			if v, err := h.handedOver(bg, p); err != nil {
				errs = append(errs, err)
			} else if v != "" {
				p.newVol, handed = v, true
			}
		}
		vol := func(key string) string {
			conf, err := c.LXCConfig(bg, node, p.VMID)
			if err != nil {
				return ""
			}
			v, _, _ := strings.Cut(conf[key], ",")
			return v
		}
		if started || swapSent {
			// PVE only queues a rootfs or mount point written to a
			// running CT as pending: it must be stopped first, and one
			// whose status could not be read may be running.
			if st, err := c.Status(bg, node, p.VMID); err != nil || st.Status != "stopped" {
				stopErr := do(bg, p.powerReq("stop"), false)
				if st, err := c.Status(bg, node, p.VMID); err != nil || st.Status != "stopped" {
					errs = append(errs, fmt.Errorf("CT %d is not known to be stopped (status %q, %v; stopping it: %v): its config was not put back; stop it, then put back the old rootfs %s (see `pct config %d`)", p.VMID, st.Status, err, stopErr, p.oldRootfs, p.VMID))
					return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, RestoreErr: errors.Join(errs...)}
				}
			}
		}
		if volsSent {
			// Before the keys go back: the read-back config must not
			// keep a new volume or the unusedM it leaves.
			if err := h.removeNewVolumesRemote(bg, p, do); err != nil {
				errs = append(errs, err)
			}
		}
		if !swapped && p.newVol != "" && vol("rootfs") == p.newVol {
			swapped = true // the swap was made though its answer was lost
		}
		if swapped {
			back := url.Values{"rootfs": {p.oldRootfs}, p.unusedKey: {p.newVol}}
			for k, v := range r.restore {
				back[k] = v
			}
			// Written only over the config the swap left (the new
			// rootfs, the old one as unusedN), unchanged since read.
			conf, err := c.LXCConfig(bg, node, p.VMID)
			if err == nil {
				now, _, _ := strings.Cut(conf["rootfs"], ",")
				if kept, _, _ := strings.Cut(conf[p.unusedKey], ","); now != p.newVol || kept != p.oldVol {
					err = fmt.Errorf("CT %d's rootfs is now %q and its %s %q, not the swap's %s and %s", p.VMID, now, p.unusedKey, kept, p.newVol, p.oldVol)
				}
				back.Set("digest", conf["digest"])
			}
			if err == nil {
				err = c.SetLXCConfig(bg, node, p.VMID, back)
			}
			if err != nil {
				// unusedN still holds the old rootfs: freeing it would
				// lose the container's data.
				errs = append(errs, fmt.Errorf("putting the old rootfs back: %w; CT %d's rootfs is still the new volume %s and its old rootfs %s is %s: nothing was deleted; put it back with `pct set %d --rootfs %s --%s %s`, then `pct set %d --delete %s`", err, p.VMID, p.newVol, p.oldVol, p.unusedKey, p.VMID, p.oldRootfs, p.unusedKey, p.newVol, p.VMID, p.unusedKey))
				return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, RestoreErr: errors.Join(errs...)}
			}
			handed = true // the new rootfs is unusedN again
		}
		if handed {
			// Only a volume known to be the new one is freed.
			if p.newVol != "" {
				if err := h.freeUnused(bg, p, do, p.unusedKey, p.newVol, false); err != nil {
					errs = append(errs, err)
				}
			} else if v := vol(p.unusedKey); v != "" {
				errs = append(errs, fmt.Errorf("CT %d's %s is %s, not known to be the new rootfs: it was not deleted", p.VMID, p.unusedKey, v))
			}
		}
		if tmpMade && h.isUpgradeTmp(bg, p) {
			try(p.destroyTmpReq())
		}
		if p.Running && (stopped || started) {
			// A shutdown that failed left it running: no second start.
			if st, err := c.Status(bg, node, p.VMID); err != nil || st.Status != "running" {
				try(p.powerReq("start"))
			}
		}
		if after, err := c.LXCConfig(bg, node, p.VMID); err != nil {
			errs = append(errs, err)
		} else if d := configDiff(r.conf, after); d != "" {
			errs = append(errs, fmt.Errorf("CT %d's config differs from before the upgrade: %s", p.VMID, d))
		}
		return &UpgradeError{VMID: p.VMID, Step: step, Err: cause, Restored: len(errs) == 0, RestoreErr: errors.Join(errs...)}
	}
	create := p.tmpCreateReq()
	if err := do(ctx, create, true); err != nil {
		// PVE's create_vm removes what a failed create made; one whose
		// end was not seen is looked for by fail.
		createUnseen = !isTaskError(err)
		return nil, fail(create.String(), err)
	}
	tmpMade = true
	if err := do(ctx, p.moveOutReq(), true); err != nil {
		return nil, fail("moving the new rootfs out of CT "+p.tmp(), err)
	}
	if err := do(ctx, p.handOverReq(), true); err != nil {
		// Even a failed task is checked: what it left decides.
		handUnseen = true
		return nil, fail("handing the new rootfs to CT "+p.vmid(), err)
	}
	handed = true
	conf, err := c.LXCConfig(ctx, node, p.VMID)
	if err == nil {
		p.newVol, _, _ = strings.Cut(conf[p.unusedKey], ",")
		// Only the hand-over may have changed the config meanwhile.
		want := maps.Clone(r.conf)
		want[p.unusedKey] = conf[p.unusedKey]
		if d := configDiff(want, conf); d != "" {
			err = fmt.Errorf("the config changed meanwhile: %s", d)
		} else {
			err = p.checkNewVol(p.newVol)
		}
	}
	if err != nil {
		return nil, fail("reading the new rootfs volume", err)
	}
	if err := do(ctx, p.destroyTmpReq(), true); err != nil {
		return nil, fail("destroying the temporary CT "+p.tmp(), err)
	}
	tmpMade = false
	if p.Running {
		stopped = true
		if err := do(ctx, p.powerReq("shutdown"), true); err != nil {
			return nil, fail("stopping CT "+p.vmid(), err)
		}
	}
	swapSent = true
	if err := do(ctx, p.swapReq(p.newVol, conf["digest"]), true); err != nil {
		return nil, fail("swapping the rootfs", err)
	}
	swapped, handed = true, false
	for _, q := range p.volumesReqs() {
		volsSent = true // an answer may be lost after PVE wrote the config
		if err := do(ctx, q, true); err != nil {
			return nil, fail("adding the new image's volumes", err)
		}
	}
	started = true
	if err := do(ctx, p.powerReq("start"), true); err != nil {
		return nil, fail("starting CT "+p.vmid(), err)
	}
	// An application whose entrypoint dies at once has "started": it
	// must still run a moment later.
	for i := 0; i < 3; i++ {
		time.Sleep(500 * time.Millisecond)
		st, err := c.Status(ctx, node, p.VMID)
		if err == nil && st.Status != "running" {
			err = fmt.Errorf("its status is %q", st.Status)
		}
		if err != nil {
			return nil, fail("starting CT "+p.vmid(), fmt.Errorf("it stopped right after its start (%v)", err))
		}
	}
	res.Started = true
	if !p.Running {
		if err := do(ctx, p.powerReq("shutdown"), true); err != nil {
			return nil, fail("stopping CT "+p.vmid()+" again", err)
		}
		started, res.Started = false, false
	}
	// Committed: the old rootfs goes, if unusedN still names it.
	if err := h.freeUnused(ctx, p, do, p.unusedKey, p.oldVol, true); err != nil {
		return res, fmt.Errorf("CT %d was upgraded, but its old rootfs %s was not freed (check %s, then remove it with `pct set %d --delete %s`): %w", p.VMID, p.oldVol, p.unusedKey, p.VMID, p.unusedKey, err)
	}
	return res, nil
}

func isTaskError(err error) bool {
	var te *pveapi.TaskError
	return errors.As(err, &te)
}

// checkNewVol checks the server's answer for the new rootfs: a volume
// on the planned storage, not the old rootfs.
func (p *UpgradePlan) checkNewVol(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("CT %d has no %s after the move", p.VMID, p.unusedKey)
	case v == p.oldVol || !strings.HasPrefix(v, p.storage+":"):
		return fmt.Errorf("CT %d's %s after the move is %q: not a new volume on storage '%s'", p.VMID, p.unusedKey, v, p.storage)
	}
	return nil
}

// isUpgradeTmp reports whether the temporary CT exists with the hostname
// the upgrade's create gave it: a VMID someone else took is not ours.
func (h *Host) isUpgradeTmp(ctx context.Context, p *UpgradePlan) bool {
	conf, err := h.api.LXCConfig(ctx, p.remote.node, p.TempVMID)
	return err == nil && conf["hostname"] == p.tmpCreateReq().v.Get("hostname")
}

// handedOver is the new volume a hand-over whose end was not seen gave
// CT VMID: an unusedN the planned config did not have, on the planned
// storage, while the temporary CT no longer has its unused0. "" when
// there is none.
func (h *Host) handedOver(ctx context.Context, p *UpgradePlan) (string, error) {
	c, node := h.api, p.remote.node
	conf, err := c.LXCConfig(ctx, node, p.VMID)
	if err != nil {
		return "", err
	}
	v, _, _ := strings.Cut(conf[p.unusedKey], ",")
	if _, had := p.remote.conf[p.unusedKey]; had || v == "" {
		return "", nil
	}
	if tmp, err := c.LXCConfig(ctx, node, p.TempVMID); err == nil && tmp["unused0"] != "" {
		return "", nil
	} else if err != nil && !errors.Is(err, pveapi.NotFound) {
		return "", err
	}
	if err := p.checkNewVol(v); err != nil {
		return "", fmt.Errorf("%w: it was not deleted", err)
	}
	return v, nil
}

// freeUnused frees the volume of CT VMID's unused key, if the key still
// names vol, with the digest of the read that showed it: a config changed
// meanwhile is refused by PVE rather than another volume freed.
func (h *Host) freeUnused(ctx context.Context, p *UpgradePlan, do func(context.Context, apiReq, bool) error, key, vol string, record bool) error {
	conf, err := h.api.LXCConfig(ctx, p.remote.node, p.VMID)
	if err != nil {
		return err
	}
	if v, _, _ := strings.Cut(conf[key], ","); v != vol {
		return fmt.Errorf("CT %d's %s is %q, not %s: it was not deleted", p.VMID, key, v, vol)
	}
	return do(ctx, p.deleteReq(key, conf["digest"]), record)
}

// removeNewVolumesRemote frees, through the API, the volumes volumesReqs
// added, as removeNewVolumes does on the host: PUT delete=mpN leaves the
// volume as an unusedM, PUT delete=unusedM frees it. Only an mpN the
// config did not have when planned, holding a storage volume at the path
// planned, is touched, and only the unusedM that then holds its volume.
func (h *Host) removeNewVolumesRemote(ctx context.Context, p *UpgradePlan, do func(context.Context, apiReq, bool) error) error {
	c, node := h.api, p.remote.node
	var errs []error
	for _, m := range p.vols.add {
		conf, err := c.LXCConfig(ctx, node, p.VMID)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		val := conf[m.Key()]
		vol, _, _ := strings.Cut(val, ",")
		if _, had := p.remote.conf[m.Key()]; had || val == "" || !strings.Contains(","+val+",", ",mp="+m.Path+",") || strings.HasPrefix(vol, "/") {
			continue
		}
		if err := do(ctx, p.deleteReq(m.Key(), conf["digest"]), false); err != nil {
			errs = append(errs, fmt.Errorf("removing the new volume %s (%s): %w", m.Key(), vol, err))
			continue
		}
		if conf, err = c.LXCConfig(ctx, node, p.VMID); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(conf)) {
			if _, had := p.remote.conf[k]; had || !strings.HasPrefix(k, "unused") || conf[k] != vol {
				continue
			}
			if err := do(ctx, p.deleteReq(k, conf["digest"]), false); err != nil {
				errs = append(errs, fmt.Errorf("freeing the new volume %s (%s): %w", vol, k, err))
			}
			break
		}
	}
	return errors.Join(errs...)
}

// configDiff names the keys two configs from GET .../config differ in
// (their digests aside).
func configDiff(a, b map[string]string) string {
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if k != "digest" && a[k] != b[k] {
			diff = append(diff, fmt.Sprintf("%s %q, now %q", k, a[k], b[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[k]; !ok && k != "digest" {
			diff = append(diff, fmt.Sprintf("%s added: %q", k, b[k]))
		}
	}
	return strings.Join(diff, "; ")
}
