package pct

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/template"
)

// Tools are the PVE commands nexcage runs.
var Tools = []string{"pct", "pvesm", "pvesh", "pveversion"}

// FindTools looks the PVE commands up in PATH: found maps a tool to its
// path.
func FindTools() (found map[string]string, missing []string) {
	found = map[string]string{}
	for _, t := range Tools {
		if p, err := exec.LookPath(t); err == nil {
			found[t] = p
		} else {
			missing = append(missing, t)
		}
	}
	return found, missing
}

// IsPVEHost reports whether all of PVE's tools are here.
func IsPVEHost() bool {
	_, missing := FindTools()
	return len(missing) == 0
}

// HostPaths are the host files the host checks read; empty fields mean
// the real ones (/etc/subuid, /etc/subgid, /proc).
type HostPaths struct {
	Subuid, Subgid, Proc string
}

func (p HostPaths) orDefault() HostPaths {
	if p.Subuid == "" {
		p.Subuid = "/etc/subuid"
	}
	if p.Subgid == "" {
		p.Subgid = "/etc/subgid"
	}
	if p.Proc == "" {
		p.Proc = "/proc"
	}
	return p
}

const hostTarget = "host"

func hostOK(check string) health.Result {
	return health.Result{Status: health.OK, Check: check, Target: hostTarget}
}

func hostProblem(status, check, cause, fix string) health.Result {
	return health.Result{Status: status, Check: check, Target: hostTarget, Cause: cause, Fix: fix}
}

// CheckHost checks what deploying on this machine needs: PVE's tools and
// their versions, application-container support, the id ranges and the
// kernel's user namespaces that unprivileged containers need. Off a
// Proxmox host it says so (deploy is unavailable) and the id and user
// namespace checks only warn.
func (h *Host) CheckHost(ctx context.Context, paths HostPaths) []health.Result {
	if h.api != nil {
		return h.checkHostRemote(ctx)
	}
	paths = paths.orDefault()
	var out []health.Result
	found, missing := FindTools()
	pve := len(missing) == 0
	switch {
	case len(found) == 0:
		out = append(out, hostProblem(health.Warn, "PVE tools (pct, pvesm, pvesh, pveversion)", "not a Proxmox host: deploy unavailable (build, convert, unpack and pull work)",
			"run deploy and create on a Proxmox VE host (its pve-manager package provides these tools)"))
	case len(missing) > 0:
		out = append(out, hostProblem(health.Fail, "PVE tools (pct, pvesm, pvesh, pveversion)", strings.Join(missing, ", ")+" not found in PATH (found: "+strings.Join(toolNames(found), ", ")+")",
			"reinstall pve-manager and pve-container, or fix PATH (they live in /usr/sbin)"))
	default:
		out = append(out, hostOK(fmt.Sprintf("PVE tools: pct, pvesm, pvesh and pveversion in %s", filepath.Dir(found["pct"]))))
		out = append(out, h.checkVersions(ctx)...)
	}
	out = append(out, checkIDRanges(paths, pve)...)
	out = append(out, checkUserNamespaces(paths, pve))
	return out
}

var reContainerVersion = regexp.MustCompile(`(?m)^pve-container: (\d+)\.(\d+)(\S*)`)

func (h *Host) checkVersions(ctx context.Context) []health.Result {
	v, err := h.Version(ctx)
	if err != nil {
		return []health.Result{hostProblem(health.Fail, "Proxmox VE version", "pveversion: "+err.Error(), "check the installation: `pveversion -v`")}
	}
	var out []health.Result
	container := ""
	if verbose, err := h.run(ctx, "pveversion", "-v"); err == nil {
		if m := reContainerVersion.FindStringSubmatch(verbose); m != nil {
			container = m[1] + "." + m[2] + m[3]
			maj, _ := strconv.Atoi(m[1])
			min, _ := strconv.Atoi(m[2])
			if maj < 6 || maj == 6 && min < 1 {
				out = append(out, hostProblem(health.Warn, "pve-container "+container+": lxc.init.uid/lxc.init.gid",
					"pve-container before 6.1 does not know the lxc.init.uid, lxc.init.gid and lxc.init.groups keys: PVE refuses the config of a container whose template sets them (an image with a non-root USER)",
					"upgrade pve-container to 6.1 or later (apt update && apt full-upgrade)"))
			}
		}
	}
	name := "Proxmox VE " + v.String()
	if container != "" {
		name += " (pve-container " + container + ")"
	}
	if v.AppContainers() {
		out = append([]health.Result{hostOK(name + ": application containers (entrypoint, env) supported")}, out...)
	} else {
		out = append([]health.Result{hostProblem(health.Warn, name+": application containers",
			"PVE before 9.1 has no entrypoint and env options (cmode it has): deploy writes lxc.init.cmd and lxc.environment lines instead, and plain .tar (OCI) templates are refused",
			"upgrade to Proxmox VE 9.1 or later")}, out...)
	}
	return out
}

// checkIDRanges looks for root's subordinate id ranges: PVE maps an
// unprivileged container's ids 0..65535 to 100000..165535.
func checkIDRanges(paths HostPaths, pve bool) []health.Result {
	const base, size = 100000, 65536
	status := health.Warn
	if pve {
		status = health.Fail
	}
	var bad []string
	for _, f := range []string{paths.Subuid, paths.Subgid} {
		ranges, err := readSubIDs(f)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		covered := false
		for _, r := range ranges["root"] {
			if r[0] <= base && r[0]+r[1] >= base+size {
				covered = true
			}
		}
		if !covered {
			have := "none"
			if rs := ranges["root"]; len(rs) > 0 {
				var s []string
				for _, r := range rs {
					s = append(s, fmt.Sprintf("%d:%d", r[0], r[1]))
				}
				have = strings.Join(s, ", ")
			}
			bad = append(bad, fmt.Sprintf("%s gives root %s, which does not cover %d:%d", f, have, base, size))
		}
	}
	check := fmt.Sprintf("%s and %s give root %d:%d for unprivileged containers", paths.Subuid, paths.Subgid, base, size)
	if len(bad) == 0 {
		return []health.Result{hostOK(check)}
	}
	cause := strings.Join(bad, "; ")
	if !pve {
		cause += " (this matters only on a Proxmox host)"
	}
	return []health.Result{hostProblem(status, check, cause, fmt.Sprintf("add the line root:%d:%d to %s and %s", base, size, paths.Subuid, paths.Subgid))}
}

// readSubIDs parses /etc/subuid: "name:start:count" lines, by name (uid 0
// counts as root).
func readSubIDs(p string) (map[string][][2]int64, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist", p)
		}
		return nil, err
	}
	defer f.Close()
	out := map[string][][2]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 {
			continue
		}
		start, err1 := strconv.ParseInt(parts[1], 10, 64)
		count, err2 := strconv.ParseInt(parts[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		name := parts[0]
		if name == "0" {
			name = "root"
		}
		out[name] = append(out[name], [2]int64{start, count})
	}
	return out, sc.Err()
}

// checkUserNamespaces reads the kernel's user namespace limits:
// unprivileged containers live in one.
func checkUserNamespaces(paths HostPaths, pve bool) health.Result {
	const check = "kernel user namespaces"
	status := health.Warn
	if pve {
		status = health.Fail
	}
	raw, err := os.ReadFile(filepath.Join(paths.Proc, "sys/user/max_user_namespaces"))
	if err != nil {
		return hostProblem(status, check, "the kernel has no user namespaces (no /proc/sys/user/max_user_namespaces): unprivileged containers cannot start",
			"boot a kernel with CONFIG_USER_NS (Proxmox's kernel has it)")
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if max <= 0 {
		return hostProblem(status, check, "user.max_user_namespaces is 0: unprivileged containers cannot start",
			"sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d)")
	}
	detail := fmt.Sprintf("%s: up to %d", check, max)
	if b, err := os.ReadFile(filepath.Join(paths.Proc, "sys/kernel/unprivileged_userns_clone")); err == nil && strings.TrimSpace(string(b)) == "0" {
		detail += "; only root may create them (kernel.unprivileged_userns_clone=0), which is all PVE needs"
	}
	return hostOK(detail)
}

func toolNames(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// StorageIDs lists the cluster's storage ids.
func (h *Host) StorageIDs(ctx context.Context) ([]string, error) {
	ss, err := h.Storages(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out, nil
}

var reVztmplName = regexp.MustCompile(`(?i)\.tar(\.(gz|xz|zst|bz2))?$`)

// findStorage is the storage id among storages (nil if none is), and
// the names of them all.
func findStorage(storages []Storage, id string) (*Storage, []string) {
	var st *Storage
	var names []string
	for i := range storages {
		names = append(names, storages[i].Name)
		if storages[i].Name == id {
			st = &storages[i]
		}
	}
	return st, names
}

// templateStorage is storage id of storages, whose templates a check
// reads; or, when there are none to read (no such storage, a disabled
// one, one without templates), the result that says so.
func templateStorage(storages []Storage, id string) (*Storage, []health.Result) {
	r := func(status, check, cause, fix string) []health.Result {
		return []health.Result{{Status: status, Check: check, Target: id, Cause: cause, Fix: fix}}
	}
	st, names := findStorage(storages, id)
	switch {
	case st == nil:
		return nil, r(health.Fail, "storage "+id, fmt.Sprintf("storage '%s' does not exist", id), "name one of: "+strings.Join(names, ", "))
	case st.Disable != 0:
		return nil, r(health.Warn, "storage "+id, "the storage is disabled: its templates were not checked", fmt.Sprintf("enable it (`pvesm set %s --disable 0`)", id))
	case !st.Holds("vztmpl"):
		return nil, r(health.OK, fmt.Sprintf("storage %s holds no templates (content %s)", id, st.Content), "", "")
	}
	return st, nil
}

// sidecarMismatch says how the template file p (entry e) differs from
// the size and sha256 its sidecar sc records.
func sidecarMismatch(e os.DirEntry, p string, sc *template.Sidecar) []string {
	var bad []string
	if fi, err := e.Info(); err == nil && fi.Size() != sc.Template.Size {
		bad = append(bad, fmt.Sprintf("it is %d bytes, the sidecar says %d", fi.Size(), sc.Template.Size))
	}
	if sum, err := fileSHA256(p); err != nil {
		bad = append(bad, err.Error())
	} else if sum != sc.Template.SHA256 {
		bad = append(bad, fmt.Sprintf("its sha256 is %s, the sidecar says %s", sum, sc.Template.SHA256))
	}
	return bad
}

// CheckStorage checks the templates of a PVE storage: those nexcage built
// (a .json sidecar beside them, as deploy uploads it) must still match
// their sidecar's size and sha256; partial uploads (temporary names of an
// interrupted deploy) and sidecars left without their template are
// listed, and removed with Repair. The error is only for a cancelled
// context.
func (h *Host) CheckStorage(ctx context.Context, id string, opts health.Options) ([]health.Result, error) {
	if h.api != nil {
		return h.checkStorageRemote(ctx, id)
	}
	r := func(status, check, cause, fix string) health.Result {
		return health.Result{Status: status, Check: check, Target: id, Cause: cause, Fix: fix}
	}
	storages, err := h.Storages(ctx)
	if err != nil {
		return []health.Result{r(health.Fail, "storage "+id, err.Error(), "run the check as root on the Proxmox host")}, nil
	}
	if _, done := templateStorage(storages, id); done != nil {
		return done, nil
	}
	probe, err := h.TemplatePath(ctx, id+":vztmpl/nexcage-check.tar.zst")
	if err != nil {
		return []health.Result{r(health.Fail, "storage "+id+": template directory", err.Error(), "check the storage with `pvesm status`")}, nil
	}
	dir := filepath.Dir(probe)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return []health.Result{r(health.OK, "storage "+id+": no templates yet ("+dir+" does not exist)", "", "")}, nil
	}
	if err != nil {
		return []health.Result{r(health.Fail, "storage "+id+": template directory "+dir, err.Error(), "run the check as root")}, nil
	}
	present := map[string]bool{}
	for _, e := range ents {
		present[e.Name()] = true
	}

	var out []health.Result
	var partial []string
	checked, foreign := 0, 0
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		switch {
		case atomicfile.IsTemp(name):
			partial = append(partial, name)
		case reVztmplName.MatchString(name) && e.Type().IsRegular():
			base := reVztmplName.ReplaceAllString(name, "")
			sc, err := template.ReadSidecar(filepath.Join(dir, base+".json"))
			if errors.Is(err, os.ErrNotExist) {
				foreign++
				continue
			}
			check := "template " + name + " matches its sidecar"
			if err != nil {
				out = append(out, redeploy(r(health.Fail, check, err.Error(), "upload it again, replacing this one")))
				continue
			}
			checked++
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if bad := sidecarMismatch(e, p, sc); len(bad) > 0 {
				out = append(out, redeploy(r(health.Fail, check, strings.Join(bad, "; "),
					"the file changed after nexcage uploaded it: remove it and its sidecars, or upload it again, replacing this one")))
			} else {
				out = append(out, r(health.OK, check, "", ""))
			}
		case strings.HasSuffix(name, ".json") && e.Type().IsRegular():
			sc, err := template.ReadSidecar(p)
			if err != nil || sc.Template.File == "" || present[sc.Template.File] {
				continue
			}
			out = append(out, checkOrphanSidecar(dir, name, sc.Template.File, id, opts))
		}
	}
	for _, name := range partial {
		out = append(out, checkPartialUpload(dir, name, id, opts))
	}
	if len(partial) == 0 {
		out = append(out, r(health.OK, "no partial uploads in "+dir, "", ""))
	}
	out = append(out, r(health.OK, fmt.Sprintf("storage %s: %d template(s) built by nexcage checked, %d other(s) without a sidecar not checked", id, checked, foreign), "", ""))
	return out, nil
}

// redeploy marks r as fixed by deploying the local template file again,
// replacing the stored one (Options.ReplaceTemplate).
func redeploy(r health.Result) health.Result {
	r.Remedy = health.Redeploy
	return r
}

// checkPartialUpload reports a temporary name an interrupted deploy left
// while uploading a template, and removes it with Repair.
func checkPartialUpload(dir, name, id string, opts health.Options) health.Result {
	p := filepath.Join(dir, name)
	size := int64(0)
	if fi, err := os.Lstat(p); err == nil {
		size = fi.Size()
	}
	return health.Leftover{
		Path:   p,
		Target: id,
		Check:  "partial upload " + name,
		Cause:  fmt.Sprintf("%d bytes of an interrupted upload (a deploy was killed)", size),
		Busy:   ": being uploaded by a running process, left alone",
		Fix:    "deploy the template again",
		ByHand: "remove " + p + " as root",
	}.Judge(opts)
}

// checkOrphanSidecar reports a .json (and .conf) whose template is not there: deploy
// uploads the sidecars first, so an interrupted upload leaves them.
func checkOrphanSidecar(dir, name, template, id string, opts health.Options) health.Result {
	check := "sidecar " + name
	cause := "its template " + template + " is not in the storage (an interrupted upload?)"
	conf := strings.TrimSuffix(name, ".json") + ".conf"
	if !opts.Repair {
		return health.Result{Status: health.Warn, Check: check, Target: id, Cause: cause,
			Repair: "removes " + name + " and " + conf, Fix: "deploy the template again"}
	}
	for _, n := range []string{conf, name} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return health.Result{Status: health.Fail, Check: check, Target: id, Cause: cause + "; removing it failed: " + err.Error(), Fix: "remove it as root"}
		}
	}
	return health.Result{Status: health.OK, Check: check, Target: id, Cause: cause, Fix: "removed " + name + " and " + conf, Repaired: true}
}
