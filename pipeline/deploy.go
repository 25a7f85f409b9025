package pipeline

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

// DeployOptions configure Deploy and Create's deploy.
type DeployOptions struct {
	// Options are the container's settings; KeepFailed keeps a container
	// whose set-up failed after it was created.
	Options pct.Options
	// Host is the PVE host (nil = pct.NewHost(), this machine); a
	// pct.OfflineHost plans for a PVE version without one (with DryRun).
	Host *pct.Host
	// AllowRawLXC deploys a template whose .conf has lines nexcage does
	// not write, dropping them with a warning (see pct.LoadOptions).
	AllowRawLXC bool
	// DryRun makes the plan and changes nothing.
	DryRun   bool
	Progress progress.Reporter
}

// DeployResult is a deploy's plan and, unless it was a dry run, what it
// did.
type DeployResult struct {
	Plan   *pct.Plan
	Result *pct.Result // nil after a dry run
}

// Deploy creates a container from template, a local template file (its
// sidecars are read and uploaded with it) or a volume id STORAGE:vztmpl/FILE.
// Everything is checked before anything changes on the host (pct.MakePlan);
// the plan's warnings go to opts.Progress; a step that fails after the
// container was created destroys it again unless Options.KeepFailed.
// Errors are *pct.Error, *pct.TemplateConfigError or the host's.
func Deploy(ctx context.Context, template string, opts DeployOptions) (*DeployResult, error) {
	rep, h := reporterAndHost(opts.Progress, opts.Host)
	t, err := pct.LoadTemplate(ctx, h, template, pct.LoadOptions{AllowRawLXC: opts.AllowRawLXC, Progress: rep})
	if err != nil {
		return nil, err
	}
	plan, err := pct.MakePlan(ctx, h, t, opts.Options)
	if err != nil {
		return nil, err
	}
	res, err := carryOut(rep, plan.Warnings, opts.DryRun, fmt.Sprintf("creating CT %d from %s", plan.VMID, plan.VolID), func() (*pct.Result, error) {
		return pct.Deploy(ctx, h, plan)
	})
	if err != nil {
		return nil, err
	}
	return &DeployResult{Plan: plan, Result: res}, nil
}

// reporterAndHost are the defaults of a deploy's reporter (none) and
// host (this machine).
func reporterAndHost(rep progress.Reporter, h *pct.Host) (progress.Reporter, *pct.Host) {
	if rep == nil {
		rep = progress.Discard
	}
	if h == nil {
		h = pct.NewHost("")
	}
	return rep, h
}

// carryOut reports a plan's warnings, then, unless skip (a dry run, or
// nothing to do), the step, and runs do; a skipped plan's result is nil.
func carryOut[R any](rep progress.Reporter, warnings []string, skip bool, step string, do func() (*R, error)) (*R, error) {
	for _, w := range warnings {
		rep.Warn("%s", w)
	}
	if skip {
		return nil, nil
	}
	rep.Step("%s", step)
	return do()
}

// templateOf is image itself when it is a template, else the template it
// is built into in dir (default: templates/ beside the store's directory).
func templateOf(ctx context.Context, store *rootfs.Store, image, dir string, b BuildOptions, rep progress.Reporter) (string, error) {
	if IsTemplate(image) {
		return image, nil
	}
	if store == nil {
		return "", fmt.Errorf("%s is an image reference, and building it needs a store", image)
	}
	if dir == "" {
		dir = filepath.Join(filepath.Dir(store.Dir), "templates")
	}
	if b.Progress == nil {
		b.Progress = rep
	}
	b.Convert.Output = dir + "/"
	res, err := Build(ctx, store, image, b)
	if err != nil {
		return "", err
	}
	return res.Result.Template, nil
}

// IsTemplate tells a template (a volume id, or a file named like a
// template: .tar.zst, .tar.gz, .tar.xz) from an image reference.
func IsTemplate(s string) bool {
	if pct.IsVolumeID(s) {
		return true
	}
	_, ok := template.CompressionFromName(s)
	return ok
}

// CreateOptions configure Create.
type CreateOptions struct {
	// Name is the container's name, its hostname and its identity: a
	// container of that name anywhere in the cluster is "already exists".
	Name string
	// Image is a template (see IsTemplate) or an image reference to build
	// one from.
	Image string
	// TemplateDir is the template cache an image is built into ("" =
	// templates/ beside the store's directory). A template there that is
	// up to date is used as it is.
	TemplateDir string
	// Build configures the build of an image; its Convert.Output is
	// TemplateDir, and its Progress defaults to Deploy.Progress.
	Build BuildOptions
	// Deploy configures the deploy; its Options.Hostname is Name.
	Deploy DeployOptions
}

// Create creates the container opts.Name from opts.Image: it refuses a
// name already taken (a *pct.Error of kind pct.ErrAlreadyExists, Param
// "name") before anything is built or changed, builds an image into the
// template cache when Image is not a template, then deploys. store is
// needed only to build (it may be nil for a template).
func Create(ctx context.Context, store *rootfs.Store, opts CreateOptions) (*DeployResult, error) {
	if opts.Deploy.Host == nil {
		opts.Deploy.Host = pct.NewHost("")
	}
	if opts.Deploy.Options.Hostname != "" && opts.Deploy.Options.Hostname != opts.Name {
		return nil, &pct.Error{Kind: pct.ErrInvalidArgument, Param: "hostname", Msg: fmt.Sprintf("the hostname %s differs from the name %s, which is the hostname", opts.Deploy.Options.Hostname, opts.Name)}
	}
	opts.Deploy.Options.Hostname = opts.Name
	if r, err := opts.Deploy.Host.FindByName(ctx, opts.Name); err != nil {
		return nil, err
	} else if r != nil {
		return nil, &pct.Error{Kind: pct.ErrAlreadyExists, Param: "name", Msg: fmt.Sprintf("a container named %s already exists (CT %d on node '%s')", opts.Name, r.VMID, r.Node), Fix: fmt.Sprintf("choose another name, or remove it with `pct destroy %d --purge`", r.VMID)}
	}
	template, err := templateOf(ctx, store, opts.Image, opts.TemplateDir, opts.Build, opts.Deploy.Progress)
	if err != nil {
		return nil, err
	}
	return Deploy(ctx, template, opts.Deploy)
}
