package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/openfiles"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

// CheckOptions configure Check and CheckHost.
type CheckOptions struct {
	// Repair deletes corrupt blobs and leftovers of interrupted writes,
	// and drops store entries whose blobs are gone.
	Repair bool
	// InUse reports whether a running process holds a path open, so a
	// repair leaves it alone (nil = read /proc once, on first use; give
	// one function to several calls to read it once for all of them).
	InUse func(path string) bool
	// StoreDir is the store ("" = rootfs.DefaultStoreDir()); TemplateDir
	// the template cache ("" = templates/ beside the store).
	StoreDir, TemplateDir string
	// StoreSetting, TempSetting and TemplateSetting say how a user chooses
	// the store, the temporary and the template directory; a directory
	// short of space names them in its fix (defaults: NEXCAGE_STORE,
	// TMPDIR, NEXCAGE_TEMPLATES).
	StoreSetting, TempSetting, TemplateSetting string
	// Host is the Proxmox host whose storages and tools are checked
	// (nil = pct.NewHost(""), this machine).
	Host *pct.Host
}

// NewInUse returns an InUse for CheckOptions that reads /proc (Linux) once,
// when first called: the paths other processes hold open. An ordinary
// user sees only their own processes.
func NewInUse() func(path string) bool { return new(openfiles.Set).InUse }

func (o CheckOptions) defaults() CheckOptions {
	if o.InUse == nil {
		o.InUse = NewInUse()
	}
	o.StoreSetting = cmp.Or(o.StoreSetting, "NEXCAGE_STORE")
	o.TempSetting = cmp.Or(o.TempSetting, "TMPDIR")
	o.TemplateSetting = cmp.Or(o.TemplateSetting, "NEXCAGE_TEMPLATES")
	return o
}

// storeDir is the store's absolute directory, looked up only by the
// checks that need it.
func (o CheckOptions) storeDir() (string, error) {
	dir := o.StoreDir
	if dir == "" {
		var err error
		if dir, err = rootfs.DefaultStoreDir(); err != nil {
			return "", err
		}
	}
	return filepath.Abs(dir)
}

// Check works out what target is and checks it: "host" (CheckHost),
// "store" (opts.StoreDir), a template (.tar.zst, .tar.gz, .tar.xz), a
// bundle (a directory with config.json, or the file), a store directory,
// a Proxmox storage id (a word without "/" naming one of the cluster's
// storages, on a PVE host), or any other directory (every template and
// bundle in it). A target that does not exist is a failed check, not an
// error; an error is a check that could not run.
func Check(ctx context.Context, target string, opts CheckOptions) ([]health.Result, error) {
	opts = opts.defaults()
	copts := health.Options{Repair: opts.Repair, InUse: opts.InUse}
	switch target {
	case "host":
		return CheckHost(ctx, opts)
	case "store":
		dir, err := opts.storeDir()
		if err != nil {
			return nil, err
		}
		return checkStore(ctx, dir, copts)
	}
	if _, ok := template.CompressionFromName(target); ok {
		return convert.CheckTemplate(ctx, target, copts)
	}
	// A bare word naming one of the cluster's storages is that storage
	// (write ./NAME for a directory of that name).
	var storagesErr error
	if !strings.Contains(target, "/") && (opts.Host != nil && opts.Host.Remote() || pct.IsPVEHost()) {
		h := opts.pveHost()
		ids, err := h.StorageIDs(ctx)
		if err == nil && slices.Contains(ids, target) {
			return h.CheckStorage(ctx, target, copts)
		}
		storagesErr = err
	}
	fi, err := os.Stat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		cause := target + " does not exist"
		if storagesErr != nil {
			cause += ", and it cannot be a Proxmox storage id either: listing the storages failed: " + storagesErr.Error()
		}
		out := []health.Result{{Status: health.Fail, Check: "target", Target: target, Cause: cause,
			Fix: "give a template, a bundle, a store (or \"store\"), a directory or a Proxmox storage id"}}
		// A killed writer may have left temporaries of it beside it.
		for _, r := range convert.CheckLeftovers(target, target, copts) {
			if r.Status != health.OK || r.Repaired {
				out = append(out, r)
			}
		}
		return out, nil
	case err != nil:
		return []health.Result{{Status: health.Fail, Check: "target", Target: target, Cause: err.Error(), Fix: "check the path and its permissions"}}, nil
	case !fi.IsDir() && filepath.Base(target) == "config.json":
		return convert.CheckBundle(ctx, target, copts)
	case !fi.IsDir():
		return []health.Result{{Status: health.Fail, Check: "target", Target: target, Cause: target + " is not a template, a bundle, a store or a directory",
			Fix: "templates end in .tar.zst, .tar.gz or .tar.xz"}}, nil
	case exists(filepath.Join(target, "config.json")):
		return convert.CheckBundle(ctx, target, copts)
	case exists(filepath.Join(target, "oci-layout")) && exists(filepath.Join(target, "index.json")):
		return checkStore(ctx, target, copts)
	}
	return convert.CheckDir(ctx, target, copts)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkStore checks a store without creating one where there is none.
func checkStore(ctx context.Context, dir string, opts health.Options) ([]health.Result, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return (&rootfs.Store{Dir: abs}).Check(ctx, opts)
}

// CheckHost checks this machine: root, PVE (pct's checks), scratch
// directories of killed runs, and the directories every stage writes to
// (the store, the temporary and the template directory: writable, with
// free space and inodes for the largest stored image).
func CheckHost(ctx context.Context, opts CheckOptions) ([]health.Result, error) {
	opts = opts.defaults()
	pve := pct.IsPVEHost()
	out := []health.Result{rootLine(pve)}
	out = append(out, opts.pveHost().CheckHost(ctx, pct.HostPaths{})...)

	store, err := opts.storeDir()
	if err != nil {
		return nil, err
	}
	var largest int64
	if imgs, err := (&rootfs.Store{Dir: store}).List(); err == nil {
		for _, im := range imgs {
			largest = max(largest, im.Size)
		}
	}
	templates := cmp.Or(opts.TemplateDir, filepath.Join(filepath.Dir(store), "templates"))
	tmp := os.TempDir()
	out = append(out,
		dirLine("store "+store, store, largest, "another image of that size", opts.StoreSetting),
		dirLine("temporary directory "+tmp, tmp, 3*largest, "build's spill of its uncompressed layers", opts.TempSetting),
		dirLine("template directory "+templates, templates, largest, "a template of it", opts.TemplateSetting),
	)
	out = append(out, rootfs.CheckTempDir(tmp, health.Options{Repair: opts.Repair, InUse: opts.InUse})...)
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
		r.Cause = "PVE's tools refuse to run without root: deploy, create, listing containers and storage checks are unavailable; unpack is rootless"
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

func (o CheckOptions) pveHost() *pct.Host {
	if o.Host != nil {
		return o.Host
	}
	return pct.NewHost("")
}
