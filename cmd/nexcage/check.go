package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

func init() {
	register(&command{
		name:    "check",
		args:    "[TARGET...]",
		summary: "check the host, templates, bundles, the store or a Proxmox storage (--repair fixes what it can)",
		help: `Without TARGET: the host (PVE tools and version, root, free space and
inodes, writable directories, subordinate ids, user namespaces, scratch
directories of killed runs). A TARGET is a template (.tar.zst, .tar.gz,
.tar.xz), a bundle directory (with config.json), the store (its directory,
or the word "store"), a directory of templates and bundles, a Proxmox
storage id (e.g. local), or the word "host".

One line per check: "ok", "warn" or "fail", the target and what was
checked, and for warn and fail the cause and the fix. --repair deletes
corrupt blobs, leftovers of interrupted writes and partial uploads, and
drops store index entries whose blobs are gone (pulled again on next use).

Exit status: 0 all ok (also after repairs), 1 any failure, 3 warnings only.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			storeFlag(fs, o)
			fs.BoolVar(&o.repair, "repair", false, "delete corrupt blobs and leftovers of interrupted writes, drop broken store entries")
		},
		run: runCheck,
	})
}

// Exit status of check when something warned but nothing failed.
const exitWarnings = 3

// checkLine renders a result: "STATUS  TARGET: CHECK[: CAUSE; FIX]".
func checkLine(r health.Result) string {
	s := fmt.Sprintf("%-4s  %s: %s", r.Status, r.Target, r.Check)
	if r.Cause == "" && r.Fix == "" {
		return s
	}
	s += ": " + r.Cause
	switch {
	case r.Repaired:
		s += "; repaired: " + r.Fix
	case r.Fix != "":
		s += "; " + r.Fix
	}
	return s
}

// checkReport is check's result object (--json).
type checkReport struct {
	OK         bool            `json:"ok"`
	Status     string          `json:"status"` // the worst status
	ExitStatus int             `json:"exit_status"`
	Repaired   int             `json:"repaired"`
	Checks     []health.Result `json:"checks"`
}

// checkOutcome is returned when not every check is ok: the report is
// already printed (or, with --json, is the failedWith result), and
// ExitStatus is 1 (failures) or 3 (warnings only). main maps it to the
// exit status without printing anything more.
type checkOutcome struct {
	status int
	*failedWith
}

func (c *checkOutcome) ExitStatus() int { return c.status }
func (c *checkOutcome) Unwrap() error   { return c.failedWith }

func runCheck(ctx context.Context, e *env, args []string) (any, error) {
	open := &openFiles{}
	repair := e.repair
	var results []health.Result
	if len(args) == 0 {
		args = []string{"host"}
	}
	for _, arg := range args {
		e.progress.Step("checking %s", arg)
		rs, err := checkTarget(ctx, e, arg, repair, open.inUse)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			r = cliResult(r)
			results = append(results, r)
			if !e.json {
				fmt.Fprintln(e.stdout, checkLine(r))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := checkReport{OK: true, Status: health.OK, Checks: results}
	fails, warns := 0, 0
	for _, r := range results {
		switch r.Status {
		case health.Fail:
			fails++
		case health.Warn:
			warns++
		}
		if r.Repaired {
			rep.Repaired++
		}
	}
	switch {
	case fails > 0:
		rep.OK, rep.Status, rep.ExitStatus = false, health.Fail, exitFailure
		return nil, &checkOutcome{exitFailure, &failedWith{result: rep, err: fmt.Errorf("%d check(s) failed, %d warned", fails, warns)}}
	case warns > 0:
		rep.OK, rep.Status, rep.ExitStatus = false, health.Warn, exitWarnings
		return nil, &checkOutcome{exitWarnings, &failedWith{result: rep, err: fmt.Errorf("%d check(s) warned", warns)}}
	}
	if e.json {
		return rep, nil
	}
	return nil, nil
}

// checkTarget works out what arg is and checks it.
func checkTarget(ctx context.Context, e *env, arg string, repair bool, inUse func(string) bool) ([]health.Result, error) {
	copts := health.Options{Repair: repair, InUse: inUse}
	switch arg {
	case "host":
		return checkHost(ctx, e, repair, inUse)
	case "store":
		dir, err := storeDir(e)
		if err != nil {
			return nil, err
		}
		return checkStore(ctx, dir, repair, inUse)
	}
	if _, ok := convert.CompressionFromName(arg); ok {
		return convert.CheckTemplate(ctx, arg, copts)
	}
	// A bare word naming one of the cluster's storages is that storage
	// (write ./NAME for a directory of that name).
	var storagesErr error
	if !strings.Contains(arg, "/") && pct.IsPVEHost() {
		h := pct.NewHost(pveRoot())
		ids, err := h.StorageIDs(ctx)
		if err == nil && contains(ids, arg) {
			return h.CheckStorage(ctx, arg, copts)
		}
		storagesErr = err
	}
	fi, err := os.Stat(arg)
	switch {
	case errors.Is(err, os.ErrNotExist):
		cause := arg + " does not exist"
		if storagesErr != nil {
			cause += ", and it cannot be a Proxmox storage id either: listing the storages failed: " + storagesErr.Error()
		}
		out := []health.Result{{Status: health.Fail, Check: "target", Target: arg, Cause: cause,
			Fix: "give a template, a bundle, a store (or \"store\"), a directory or a Proxmox storage id"}}
		// A killed writer may have left temporaries of it beside it.
		for _, r := range convert.CheckLeftovers(arg, arg, copts) {
			if r.Status != health.OK || r.Repaired {
				out = append(out, r)
			}
		}
		return out, nil
	case err != nil:
		return []health.Result{{Status: health.Fail, Check: "target", Target: arg, Cause: err.Error(), Fix: "check the path and its permissions"}}, nil
	case !fi.IsDir() && filepath.Base(arg) == "config.json":
		return convert.CheckBundle(ctx, arg, copts)
	case !fi.IsDir():
		return []health.Result{{Status: health.Fail, Check: "target", Target: arg, Cause: arg + " is not a template, a bundle, a store or a directory",
			Fix: "templates end in .tar.zst, .tar.gz or .tar.xz"}}, nil
	case exists(filepath.Join(arg, "config.json")):
		return convert.CheckBundle(ctx, arg, copts)
	case exists(filepath.Join(arg, "oci-layout")) && exists(filepath.Join(arg, "index.json")):
		return checkStore(ctx, arg, repair, inUse)
	}
	return convert.CheckDir(ctx, arg, copts)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func storeDir(e *env) (string, error) {
	dir := e.store
	if dir == "" {
		var err error
		if dir, err = rootfs.DefaultStoreDir(); err != nil {
			return "", err
		}
	}
	return filepath.Abs(dir)
}

// checkStore checks a store without creating one where there is none.
func checkStore(ctx context.Context, dir string, repair bool, inUse func(string) bool) ([]health.Result, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return (&rootfs.Store{Dir: abs}).Check(ctx, health.Options{Repair: repair, InUse: inUse})
}

// checkHost checks this machine: root, PVE (pct's checks), and the
// directories every stage writes to against the largest stored image.
func checkHost(ctx context.Context, e *env, repair bool, inUse func(string) bool) ([]health.Result, error) {
	pve := pct.IsPVEHost()
	out := []health.Result{rootLine(pve)}
	out = append(out, pct.NewHost(pveRoot()).CheckHost(ctx, pct.HostPaths{})...)

	store, err := storeDir(e)
	if err != nil {
		return nil, err
	}
	var largest int64
	if imgs, err := (&rootfs.Store{Dir: store}).List(); err == nil {
		for _, im := range imgs {
			largest = max(largest, im.Size)
		}
	}
	templates := os.Getenv("NEXCAGE_TEMPLATES")
	if templates == "" {
		templates = filepath.Join(filepath.Dir(store), "templates")
	}
	tmp := os.TempDir()
	out = append(out,
		dirLine("store "+store, store, largest, "another image of that size", "--store or NEXCAGE_STORE"),
		dirLine("temporary directory "+tmp, tmp, 3*largest, "build's spill of its uncompressed layers", "TMPDIR"),
		dirLine("template directory "+templates, templates, largest, "a template of it", "NEXCAGE_TEMPLATES or -o"),
	)
	out = append(out, rootfs.CheckTempDir(tmp, health.Options{Repair: repair, InUse: inUse})...)
	return out, ctx.Err()
}

func rootLine(pve bool) health.Result {
	r := health.Result{Status: health.OK, Target: "host"}
	uid := os.Geteuid()
	switch {
	case uid == 0:
		r.Check = "running as root: every stage available"
	case pve:
		r.Status, r.Check = health.Warn, fmt.Sprintf("running as uid %d", uid)
		r.Cause = "PVE's tools refuse to run without root: deploy, create, list --containers and storage checks are unavailable; unpack is rootless"
		r.Fix = "run nexcage as root on the Proxmox host"
	default:
		r.Check = fmt.Sprintf("running as uid %d: pull, build and convert need no root; unpack is rootless (other owners kept in the user.rootlesscontainers xattr, device nodes left out)", uid)
	}
	return r
}

const (
	minFree   = 1 << 30 // below this a directory warns whatever the images
	minInodes = 10000
)

// dirLine checks that dir (or, while it does not exist, the directory it
// will be created in) is writable and has room for need bytes.
func dirLine(label, dir string, need int64, forWhat, setting string) health.Result {
	r := health.Result{Status: health.OK, Target: "host", Check: label}
	at, note := dir, ""
	for {
		if _, err := os.Stat(at); err == nil || filepath.Dir(at) == at {
			break
		}
		at, note = filepath.Dir(at), " (not there yet: measured at "+filepath.Dir(at)+")"
	}
	var problems []string
	worst := health.OK
	bad := func(status, msg string) {
		problems = append(problems, msg)
		if status == health.Fail || worst == health.OK {
			worst = status
		}
	}
	if f, err := atomicfile.Create(filepath.Join(at, ".check"), 0o600); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		bad(health.Fail, "not writable: "+err.Error())
	} else {
		f.Abort()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(at, &st); err != nil {
		bad(health.Fail, "cannot read the file system's free space: "+err.Error())
	} else {
		free := int64(st.Bavail) * st.Bsize
		switch {
		case free < need:
			bad(health.Fail, fmt.Sprintf("%s free, but %s needs about %s", progress.HumanBytes(free), forWhat, progress.HumanBytes(need)))
		case free < minFree:
			bad(health.Warn, fmt.Sprintf("only %s free", progress.HumanBytes(free)))
		}
		if st.Files > 0 && st.Ffree < minInodes {
			status := health.Warn
			if st.Ffree == 0 {
				status = health.Fail
			}
			bad(status, fmt.Sprintf("only %d inodes free (an unpacked image needs one per file)", st.Ffree))
		}
		if len(problems) == 0 {
			inodes := "inodes not limited"
			if st.Files > 0 {
				inodes = fmt.Sprintf("%d inodes", st.Ffree)
			}
			r.Check += fmt.Sprintf("%s: writable, %s and %s free", note, progress.HumanBytes(free), inodes)
			if need > 0 {
				r.Check += fmt.Sprintf(" (%s needs about %s)", forWhat, progress.HumanBytes(need))
			}
			return r
		}
	}
	r.Status, r.Cause = worst, strings.Join(problems, "; ")+note
	r.Fix = "free space there, or choose another directory (" + setting + ")"
	return r
}

// openFiles knows which paths running processes hold open, so --repair
// leaves alone the temporary files of writers that are still running.
// It reads /proc (Linux), once, when the first leftover is judged; an
// ordinary user sees only their own processes.
type openFiles struct {
	once  sync.Once
	paths []string
}

func (o *openFiles) inUse(p string) bool {
	o.once.Do(o.scan)
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	for _, q := range o.paths {
		if q == abs || strings.HasPrefix(q, abs+"/") {
			return true
		}
	}
	return false
}

func (o *openFiles) scan() {
	self := strconv.Itoa(os.Getpid())
	procs, _ := os.ReadDir("/proc")
	for _, pr := range procs {
		pid := pr.Name()
		if _, err := strconv.Atoi(pid); err != nil || pid == self {
			continue
		}
		links := []string{filepath.Join("/proc", pid, "cwd")}
		fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		for _, fd := range fds {
			links = append(links, filepath.Join("/proc", pid, "fd", fd.Name()))
		}
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, "/") {
				o.paths = append(o.paths, strings.TrimSuffix(t, " (deleted)"))
			}
		}
	}
}
