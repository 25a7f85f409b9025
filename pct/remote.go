package pct

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/pveapi"
)

// NewRemoteHost returns a PVE cluster reached through its HTTP API
// instead of its tools: plans and deploys are the same, made of API
// requests. What the API cannot do (raw lxc.* lines, which only root@pam
// writes on the host) is refused before anything changes, with a
// *RawLinesError.
func NewRemoteHost(c *pveapi.Client) *Host {
	return &Host{api: c, Root: "/nonexistent"}
}

// Remote reports a host reached through the HTTP API.
func (h *Host) Remote() bool { return h.api != nil }

// RawLinesError is a deploy through the API of a container whose config
// needs raw lxc.* lines: PVE's API lets no one but root@pam on the host
// write them, so they would be lost.
type RawLinesError struct {
	Lines []string // the lines, "key: value"
	// Version is the cluster's PVE release: from 9.1 on, an OCI archive
	// imported by PVE itself becomes an application container.
	Version Version
}

func (e *RawLinesError) Error() string {
	s := fmt.Sprintf("the container needs raw LXC lines, which PVE's API does not let anyone but root@pam on the host set: %s", strings.Join(e.Lines, "; "))
	if e.Version.AppContainers() {
		s += fmt.Sprintf(" (PVE %s takes an application's entrypoint and environment as API parameters, not its working directory, user or stop signal)", e.Version)
	}
	return s
}

// Is makes a RawLinesError an ErrInvalidArgument.
func (e *RawLinesError) Is(target error) bool { return target == ErrInvalidArgument }

// remotePlan is what a plan does through the API.
type remotePlan struct {
	create url.Values // POST /nodes/{node}/lxc, without vmid and password
	set    url.Values // PUT .../config, or nil
	// sha256 of the template to upload, which PVE verifies.
	sha256 string
	// storage is the template storage an upload goes to.
	storage string
}

func (h *Host) remoteVersion(ctx context.Context) (Version, error) {
	v, err := h.api.Version(ctx)
	if err != nil {
		return Version{}, err
	}
	maj, min, ok := v.MajorMinor()
	if !ok {
		return Version{}, newError(ErrFailed, "", fmt.Sprintf("cannot read the PVE version from the API's release %q", v.Release), "is this a Proxmox VE API?")
	}
	return Version{maj, min}, nil
}

func (h *Host) remoteResources(ctx context.Context) ([]Resource, error) {
	rs, err := h.api.ClusterResources(ctx, "vm")
	if err != nil {
		return nil, err
	}
	out := make([]Resource, 0, len(rs))
	for _, r := range rs {
		if err := checkNodeName(r.Node); err != nil {
			return nil, err
		}
		out = append(out, Resource{ID: r.ID, VMID: int(r.VMID), Node: r.Node, Name: r.Name, Status: r.Status, Type: r.Type})
	}
	return out, nil
}

// remoteStorages is the storage configuration as the nodes report it: a
// storage listed by every node is available on all of them.
func (h *Host) remoteStorages(ctx context.Context) ([]Storage, error) {
	nodes, err := h.remoteNodes(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Storage{}
	on := map[string][]string{}
	var order []string
	for _, n := range nodes {
		ss, err := h.api.NodeStorages(ctx, n, "")
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if byName[s.Storage] == nil {
				st := &Storage{Name: s.Storage, Type: s.Type, Content: s.Content}
				if !bool(s.Enabled) {
					st.Disable = 1
				}
				byName[s.Storage] = st
				order = append(order, s.Storage)
			}
			on[s.Storage] = append(on[s.Storage], n)
		}
	}
	out := make([]Storage, 0, len(order))
	for _, name := range order {
		s := *byName[name]
		if len(on[name]) < len(nodes) {
			s.Nodes = strings.Join(on[name], ",")
		}
		out = append(out, s)
	}
	return out, nil
}

func (h *Host) remoteNodes(ctx context.Context) ([]string, error) {
	ns, err := h.api.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ns))
	for i, n := range ns {
		if err := checkNodeName(n.Node); err != nil {
			return nil, err
		}
		names[i] = n.Node
	}
	sort.Strings(names)
	return names, nil
}

func (h *Host) remoteDescription(ctx context.Context, r Resource) (string, error) {
	conf, err := h.api.LXCConfig(ctx, r.Node, r.VMID)
	if errors.Is(err, pveapi.NotFound) {
		return "", nil // destroyed meanwhile
	}
	return conf["description"], err
}

// remoteVolume finds a template volume on a node's storage.
func (h *Host) remoteVolume(ctx context.Context, node, volid string) (*pveapi.Volume, error) {
	storage, _, _ := strings.Cut(volid, ":")
	vols, err := h.api.StorageContent(ctx, node, storage, "vztmpl")
	if err != nil {
		return nil, err
	}
	for i := range vols {
		if vols[i].VolID == volid {
			return &vols[i], nil
		}
	}
	return nil, nil
}

// remoteNode chooses the node of a deploy: the one asked for, else the
// cluster's only node, else the only node that has both storages.
func remoteNode(storages []Storage, nodes []string, o Options, rootStorage, tmplStorage string) (string, error) {
	if o.Node != "" {
		if !slices.Contains(nodes, o.Node) {
			return "", newError(ErrNotFound, "node", fmt.Sprintf("node '%s' is not in this cluster (it has %s)", o.Node, strings.Join(nodes, ", ")), "name one of them in Node", "Node")
		}
		return o.Node, nil
	}
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	var fit []string
	for _, n := range nodes {
		if checkStorage(storages, rootStorage, "rootdir", n, "Storage") == nil &&
			(tmplStorage == "" || checkStorage(storages, tmplStorage, "vztmpl", n, "TemplateStorage") == nil) {
			fit = append(fit, n)
		}
	}
	switch len(fit) {
	case 1:
		return fit[0], nil
	case 0:
		return "", newError(ErrStorage, "node", fmt.Sprintf("no node of the cluster (%s) has both storage '%s' and the template's storage", strings.Join(nodes, ", "), rootStorage), "choose storages of one node, and that node with Node", "Storage", "TemplateStorage", "Node")
	}
	return "", newError(ErrInvalidArgument, "node", fmt.Sprintf("the storages are on several nodes of the cluster (%s): which one should hold the container?", strings.Join(fit, ", ")), "name one of them in Node", "Node")
}

// planRemote fills in what MakePlan does through the API: the node, the
// upload (or reuse) of a local template, the create and config requests,
// and the refusal of what the API cannot set.
func (h *Host) planRemote(ctx context.Context, p *Plan, t *Template, o Options, storages []Storage) error {
	nodes, err := h.remoteNodes(ctx)
	if err != nil {
		return err
	}
	rootStorage := cmp.Or(o.Storage, "local-lvm")
	tmplStorage := ""
	if t.VolID != "" {
		tmplStorage, _, _ = strings.Cut(t.VolID, ":")
	} else {
		tmplStorage = cmp.Or(o.TemplateStorage, "local")
	}
	if p.Node, err = remoteNode(storages, nodes, o, rootStorage, tmplStorage); err != nil {
		return err
	}
	if err := checkStorage(storages, rootStorage, "rootdir", p.Node, "Storage"); err != nil {
		return err
	}
	p.remote = &remotePlan{storage: tmplStorage}
	p.apiUser = h.APIUser
	if t.VolID != "" {
		if err := checkStorage(storages, tmplStorage, "vztmpl", p.Node, "the template's storage"); err != nil {
			return err
		}
		v, err := h.remoteVolume(ctx, p.Node, t.VolID)
		if err != nil {
			return err
		}
		if v == nil {
			return newError(ErrNotFound, "ostemplate", fmt.Sprintf("template %s is not on node '%s'", t.VolID, p.Node), "upload it (a deploy of a local file does) or check the volume id")
		}
		p.VolID = t.VolID
		// Only the template itself is on the storage (the API uploads no
		// sidecars), and it cannot be read back: say what is not applied.
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s is deployed without its .conf and .json (the API cannot read them from the storage): no entrypoint, environment or volumes of an image; deploy the local template file to apply them", t.VolID))
		return nil
	}
	if err := checkStorage(storages, tmplStorage, "vztmpl", p.Node, "TemplateStorage"); err != nil {
		return err
	}
	p.VolID = tmplStorage + ":vztmpl/" + filepath.Base(t.File)
	fi, err := os.Stat(t.File)
	if err != nil {
		return newError(ErrNotFound, "template", fmt.Sprintf("template %s cannot be read: %v", t.File, err), "build it first")
	}
	sum := t.SHA256
	if sum == "" {
		if sum, err = fileSHA256(t.File); err != nil {
			return err
		}
	}
	p.remote.sha256 = sum
	p.Upload = &Upload{From: t.File, To: p.VolID}
	have, err := h.remoteVolume(ctx, p.Node, p.VolID)
	if err != nil {
		return err
	}
	switch {
	case have == nil:
	case int64(have.Size) == fi.Size() && !o.ReplaceTemplate:
		// The API cannot read a stored file's checksum back: its name and
		// size must do, as they do for PVE's own downloads.
		p.Upload.Skip = true
	case !o.ReplaceTemplate:
		return newError(ErrAlreadyExists, "template", fmt.Sprintf("a different template named %s is already on storage '%s' (%d bytes, this one has %d)", filepath.Base(t.File), tmplStorage, int64(have.Size), fi.Size()), "rename yours, or overwrite it with ReplaceTemplate", "ReplaceTemplate")
	}
	return nil
}

// finishRemote turns the plan's config into API parameters, refusing
// raw lines the API cannot write.
func (p *Plan) finishRemote(o Options) error {
	c := p.Config
	var raw []string
	if !p.Container.AppContainers() {
		for _, e := range c.Env {
			raw = append(raw, "lxc.environment.runtime: "+e)
		}
	}
	for _, r := range c.Raw {
		raw = append(raw, r.Key+": "+r.Value)
	}
	if len(raw) > 0 {
		return &RawLinesError{Lines: raw, Version: p.Version}
	}
	v := url.Values{}
	add := func(k, val string) {
		if val != "" {
			v.Add(k, val)
		}
	}
	baseParams(c, add)
	if o.SSHKeysFile != "" {
		keys, err := os.ReadFile(o.SSHKeysFile)
		if err != nil {
			return newError(ErrNotFound, "ssh-public-keys", fmt.Sprintf("SSHKeysFile %s cannot be read (%v)", o.SSHKeysFile, err), "give a file of OpenSSH public keys", "SSHKeysFile")
		}
		add("ssh-public-keys", string(keys))
	}
	add("description", c.Description)
	add("entrypoint", c.Entrypoint)
	add("cmode", c.Cmode)
	if len(c.Env) > 0 {
		// PVE's env is one NUL-separated value, which a form can carry.
		add("env", strings.Join(c.Env, "\x00"))
	}
	for i := 0; i+1 < len(o.Extra); i += 2 {
		add(strings.TrimPrefix(o.Extra[i], "--"), o.Extra[i+1])
	}
	p.remote.create = v
	if p.apiUser != "" && p.apiUser != "root@pam" {
		var binds []string
		for _, m := range c.MountPoints {
			if strings.HasPrefix(m.Volume, "/") {
				binds = append(binds, m.Key()+": "+m.Value())
			}
		}
		if len(binds) > 0 {
			return newError(ErrPermission, "mount", fmt.Sprintf("PVE lets only root@pam, logged in with its password, bind host directories into a container, not %s: %s", p.apiUser, strings.Join(binds, "; ")),
				"deploy as root@pam with its password, or on the host, or use storage volumes instead of Mounts", "Mounts")
		}
	}
	if len(c.MountPoints) > 0 {
		p.remote.set = url.Values{}
		for _, m := range c.MountPoints {
			p.remote.set.Add(m.Key(), m.Value())
		}
	}
	return nil
}

const apiPrefix = "/api2/json"

// hiddenValue stands for the password in a listing.
const hiddenValue = "(not shown)"

// formLine shows a request's parameters, key=value, quoted where a value
// has blanks, quotes or anything not printable (control characters, C1,
// bidi overrides, invalid UTF-8: descriptions are anyone's text), in the
// order they were added. The environment shows its names only.
func formLine(method, path string, keys []string, v url.Values) string {
	s := method + " " + apiPrefix + path
	for _, k := range keys {
		for _, val := range v[k] {
			if k == "env" {
				val = hiddenEnv(val)
			}
			if val != hiddenValue && strings.ContainsFunc(val, func(r rune) bool {
				return r == ' ' || r == '"' || r == '\'' || r == utf8.RuneError || !unicode.IsPrint(r)
			}) {
				val = strconv.Quote(val)
			}
			s += " " + k + "=" + val
		}
	}
	return s
}

// hiddenEnv is PVE's env (NAME=VALUE entries joined by NULs) as listings
// show it: the names, each value hidden as the password is. Values are
// often secrets (tokens, database passwords), and listings go to
// terminals, logs and --json.
func hiddenEnv(env string) string {
	parts := strings.Split(env, "\x00")
	for i, e := range parts {
		if name, _, ok := strings.Cut(e, "="); ok {
			parts[i] = name + "=" + hiddenValue
		}
	}
	return strings.Join(parts, "\x00")
}

// hiddenRawLine is a raw config line as listings show it: an environment
// line with its value hidden (hiddenEnv).
func hiddenRawLine(l string) string {
	for _, k := range []string{"lxc.environment.runtime: ", "lxc.environment: "} {
		if e, ok := strings.CutPrefix(l, k); ok {
			return k + hiddenEnv(e)
		}
	}
	return l
}

// nodeNameRE is PVE's node name (pve_verify_node_name).
var nodeNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// checkNodeName refuses a node name from the API that PVE would not
// accept: it goes into printed request lines and errors.
func checkNodeName(n string) error {
	if !nodeNameRE.MatchString(n) {
		return newError(ErrFailed, "node", fmt.Sprintf("the API names a node %s, which is not a PVE node name", strconv.QuoteToASCII(n)), "check that the URL is a Proxmox VE API endpoint")
	}
	return nil
}

// remoteCommands are the plan's API requests for --dry-run.
func (p *Plan) remoteCommands() []string {
	var out []string
	if u := p.Upload; u != nil {
		if u.Skip {
			out = append(out, fmt.Sprintf("# %s is already on node %s (same name and size): reused, not uploaded", u.To, p.Node))
		} else {
			name := filepath.Base(u.From)
			out = append(out, formLine("POST", fmt.Sprintf("/nodes/%s/storage/%s/upload", p.Node, p.remote.storage), []string{"content", "filename", "checksum-algorithm", "checksum"},
				url.Values{"content": {"vztmpl"}, "filename": {name}, "checksum-algorithm": {"sha256"}, "checksum": {p.remote.sha256}}))
		}
	}
	create := url.Values{"vmid": {strconv.Itoa(p.VMID)}, "ostemplate": {p.VolID}}
	keys := []string{"vmid", "ostemplate"}
	for k, vals := range p.remote.create {
		create[k] = vals
	}
	keys = append(keys, sortedKeys(p.remote.create)...)
	if p.password != "" {
		create.Set("password", hiddenValue)
		keys = append(keys, "password")
	}
	out = append(out, formLine("POST", "/nodes/"+p.Node+"/lxc", keys, create))
	if p.remote.set != nil {
		out = append(out, formLine("PUT", fmt.Sprintf("/nodes/%s/lxc/%d/config", p.Node, p.VMID), sortedKeys(p.remote.set), p.remote.set))
	}
	if p.Start != nil {
		out = append(out, fmt.Sprintf("POST %s/nodes/%s/lxc/%d/status/start", apiPrefix, p.Node, p.VMID))
	}
	return out
}

func sortedKeys(v url.Values) []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// createUndoWait bounds the wait, when a deploy fails or is interrupted
// while its create task runs, for that task to end so that the CT it
// made can be destroyed.
const createUndoWait = 5 * time.Minute

// deployRemote is Deploy through the API: each task waited for, a
// failure after the create undone with DELETE ?purge=1 unless KeepFailed.
func (h *Host) deployRemote(ctx context.Context, p *Plan) (*Result, error) {
	res := &Result{Node: p.Node, VolID: p.VolID}
	c := h.api
	if p.Upload != nil && !p.Upload.Skip {
		upid, err := c.UploadTemplate(ctx, p.Node, p.remote.storage, p.Upload.From, p.remote.sha256)
		if err != nil {
			return nil, err
		}
		if _, err := c.WaitTask(ctx, p.Node, upid); err != nil {
			return nil, err
		}
		res.Uploaded = true
	}
	var pending string // the UPID of a create whose end was not seen
	err := p.createRetrying(ctx, h, pveapi.AlreadyExists, func() error {
		pending = ""
		params := url.Values{}
		for k, v := range p.remote.create {
			params[k] = v
		}
		params.Set("vmid", strconv.Itoa(p.VMID))
		params.Set("ostemplate", p.VolID)
		if p.password != "" {
			params.Set("password", p.password)
		}
		upid, err := c.CreateLXC(ctx, p.Node, params)
		if err != nil {
			return err
		}
		if _, err = c.WaitTask(ctx, p.Node, upid); err != nil {
			// A task that failed removed what it made (create_vm); one
			// whose end was not seen (a poll error, a timeout, Ctrl-C)
			// may yet make the CT.
			var te *pveapi.TaskError
			if !errors.As(err, &te) {
				pending = upid
			}
		}
		return err
	})
	res.VMID = p.VMID
	res.Commands = p.Commands()
	destroy := func(ctx context.Context) error {
		upid, err := c.Destroy(ctx, p.Node, p.VMID, true)
		if err == nil {
			_, err = c.WaitTask(ctx, p.Node, upid)
		}
		return err
	}
	if err != nil && pending != "" {
		cause := fmt.Errorf("creating CT %d on node %s: %w", p.VMID, p.Node, err)
		return nil, p.undoer(ctx, " on node "+p.Node, func(ctx context.Context) error {
			wctx, cancel := context.WithTimeout(ctx, createUndoWait)
			defer cancel()
			if _, err := c.WaitTask(wctx, p.Node, pending); err != nil {
				var te *pveapi.TaskError
				if errors.As(err, &te) {
					return nil // the create failed after all: nothing is left
				}
				return err
			}
			return destroy(ctx)
		})(cause)
	}
	if err != nil {
		return nil, err
	}
	undo := p.undoer(ctx, " on node "+p.Node, destroy)
	if p.remote.set != nil {
		if err := c.SetLXCConfig(ctx, p.Node, p.VMID, p.remote.set); err != nil {
			return nil, undo(err)
		}
	}
	if p.Start != nil {
		upid, err := c.Start(ctx, p.Node, p.VMID)
		if err == nil {
			_, err = c.WaitTask(ctx, p.Node, upid)
		}
		if err != nil {
			return nil, undo(err)
		}
		res.Started = true
	}
	return res, nil
}

// checkHostRemote checks the API: reachable with these credentials, its
// PVE version and nodes.
func (h *Host) checkHostRemote(ctx context.Context) []health.Result {
	const target = "remote"
	r := func(status, check, cause, fix string) health.Result {
		return health.Result{Status: status, Check: check, Target: target, Cause: cause, Fix: fix}
	}
	name := "PVE API"
	if h.Endpoint != "" {
		name += " " + h.Endpoint
	}
	v, err := h.remoteVersion(ctx)
	if err != nil {
		return []health.Result{r(health.Fail, name, err.Error(), "check the URL, the credentials and the fingerprint")}
	}
	out := []health.Result{r(health.OK, name+": Proxmox VE "+v.String(), "", "")}
	if !v.AppContainers() {
		out = append(out, r(health.Warn, "Proxmox VE "+v.String()+": application containers",
			"PVE before 9.1 has no entrypoint and env options, and raw lxc.* lines cannot be set through the API: application images cannot be deployed remotely",
			"upgrade to Proxmox VE 9.1 or later, or deploy application images on the host"))
	}
	nodes, err := h.api.Nodes(ctx)
	if err != nil {
		return append(out, r(health.Fail, "cluster nodes", err.Error(), "grant the API user Sys.Audit on /"))
	}
	for _, n := range nodes {
		if n.Status == "online" || n.Status == "" {
			out = append(out, r(health.OK, "node "+n.Node+" online", "", ""))
		} else {
			out = append(out, r(health.Warn, "node "+n.Node, "the node is "+n.Status, "deploy to another node"))
		}
	}
	return out
}

// checkStorageRemote checks a storage through the API: it exists, and
// which templates it holds. The API cannot read a file's checksum back,
// so templates are not verified here.
func (h *Host) checkStorageRemote(ctx context.Context, id string) ([]health.Result, error) {
	r := func(status, check, cause, fix string) health.Result {
		return health.Result{Status: status, Check: check, Target: id, Cause: cause, Fix: fix}
	}
	storages, err := h.remoteStorages(ctx)
	if err != nil {
		return []health.Result{r(health.Fail, "storage "+id, err.Error(), "check the API user's privileges (Datastore.Audit)")}, nil
	}
	st, done := templateStorage(storages, id)
	if done != nil {
		return done, nil
	}
	nodes, err := h.remoteNodes(ctx)
	if err != nil {
		return nil, err
	}
	var out []health.Result
	for _, n := range nodes {
		if !st.OnNode(n) {
			continue
		}
		vols, err := h.api.StorageContent(ctx, n, id, "vztmpl")
		if err != nil {
			out = append(out, r(health.Fail, "storage "+id+" on node "+n, err.Error(), "check the node and the API user's privileges"))
			continue
		}
		out = append(out, r(health.OK, fmt.Sprintf("storage %s on node %s: %d template(s) listed (their checksums cannot be read through the API: check them on the host)", id, n, len(vols)), "", ""))
	}
	return out, nil
}
