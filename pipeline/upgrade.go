package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// UpgradeOptions configure Upgrade.
type UpgradeOptions struct {
	// Image is the new image: a template (see IsTemplate) or an image
	// reference built first ("" = the reference the container was made
	// from, re-pulled as Build.Pull says).
	Image string
	// TemplateDir is the template cache ("" = templates/ beside the
	// store's directory).
	TemplateDir string
	Build       BuildOptions
	// Host is the PVE host (nil = this machine).
	Host *pct.Host
	// Upgrade says what may be upgraded and how (Adopt, DiscardRootfsChanges,
	// HealthCmd).
	Upgrade pct.UpgradeOptions
	// AllowRawLXC reads templates whose .conf has lines nexcage does not
	// write, dropping them (see pct.LoadOptions).
	AllowRawLXC bool
	// DryRun makes the plan and changes nothing on the host (an image is
	// still built into the template cache).
	DryRun   bool
	Progress progress.Reporter
}

// UpgradeResult is an upgrade's plan and, unless it was a dry run or the
// container was up to date, what it did.
type UpgradeResult struct {
	Plan   *pct.UpgradePlan
	Result *pct.UpgradeResult
}

// Upgrade moves container ct (a VMID or the name create gave it) to a new
// version of its image, keeping its VMID, config, volumes and the user's
// changes (pct.PlanUpgrade, pct.Upgrade). An image reference is built
// first; when the container already runs that template the plan is
// UpToDate and nothing on the host is touched. A container nexcage did
// not create is refused unless Upgrade.Adopt, with Image naming its image.
func Upgrade(ctx context.Context, store *rootfs.Store, ct string, opts UpgradeOptions) (*UpgradeResult, error) {
	rep, h := reporterAndHost(opts.Progress, opts.Host)
	if h.Remote() && opts.Upgrade.HealthCmd != "" {
		// Before anything is built: the API cannot run it.
		return nil, &pct.RemoteExecError{Cmd: opts.Upgrade.HealthCmd}
	}
	vmid, err := resolveCT(ctx, h, ct)
	if err != nil {
		return nil, err
	}
	managed, err := h.ListManaged(ctx)
	if err != nil {
		return nil, err
	}
	var marker *pct.Marker
	for _, m := range managed {
		if m.VMID == vmid {
			mk := m.Marker
			marker = &mk
		}
	}
	image := opts.Image
	switch {
	case marker == nil && !opts.Upgrade.Adopt:
		return nil, &pct.Error{Kind: pct.ErrInvalidArgument, Param: "vmid", Msg: fmt.Sprintf("CT %d was not created by nexcage (no marker in its description)", vmid), Fix: "upgrade it with Adopt, and Image naming the image it runs", Fields: []string{"Adopt", "Image"}}
	case marker == nil && image == "":
		return nil, &pct.Error{Kind: pct.ErrInvalidArgument, Param: "image", Msg: fmt.Sprintf("CT %d is adopted: nexcage does not know its image", vmid), Fix: "name the image to upgrade it to in Image", Fields: []string{"Image"}}
	case image == "" && marker.Image == "":
		return nil, &pct.Error{Kind: pct.ErrInvalidArgument, Param: "image", Msg: fmt.Sprintf("CT %d was deployed from a template without an image reference", vmid), Fix: "name the image to upgrade it to in Image", Fields: []string{"Image"}}
	case image == "" && !markerImageOK(marker.Image):
		// The marker is in the description, which anyone allowed to edit
		// the CT's options can change: only a registry reference, which
		// is pulled, is taken from it; a path would make a file on this
		// host (another CT's backup) the rootfs.
		return nil, &pct.Error{Kind: pct.ErrInvalidArgument, Param: "image", Msg: fmt.Sprintf("CT %d's description names the image %q, which is not a registry reference; nexcage takes only registry references from a description, which any user allowed to edit the CT can change", vmid, marker.Image), Fix: "name the image to upgrade it to in Image", Fields: []string{"Image"}}
	case image == "":
		image = marker.Image
	}
	template, err := templateOf(ctx, store, image, opts.TemplateDir, opts.Build, rep)
	if err != nil {
		return nil, err
	}
	lo := pct.LoadOptions{AllowRawLXC: opts.AllowRawLXC, Progress: rep}
	newT, err := pct.LoadTemplate(ctx, h, template, lo)
	if err != nil {
		return nil, err
	}
	var oldT *pct.Template
	uo := opts.Upgrade
	if marker != nil {
		// The template the container came from, for its image's defaults;
		// gone is not fatal (PlanUpgrade says what that means).
		// Only a template storage's volume: the description is the user's,
		// and a path there would read any file on the host.
		switch {
		case !markerTemplateOK(marker.Template):
		case h.Remote():
			oldT = cachedTemplate(ctx, h, *marker, lo, opts.TemplateDir, store, opts.Image)
		default:
			if t, err := pct.LoadTemplate(ctx, h, marker.Template, lo); err == nil {
				oldT = t
			}
		}
	}
	plan, err := pct.PlanUpgrade(ctx, h, vmid, oldT, newT, uo)
	if err != nil {
		return nil, err
	}
	res, err := carryOut(rep, plan.Warnings, opts.DryRun || plan.UpToDate, fmt.Sprintf("upgrading CT %d to %s", plan.VMID, plan.VolID), func() (*pct.UpgradeResult, error) {
		return pct.Upgrade(ctx, h, plan)
	})
	if err != nil {
		return nil, err
	}
	return &UpgradeResult{Plan: plan, Result: res}, nil
}

// cachedTemplate is, through the API (which cannot read a stored
// template's .conf and .json), the local copy of the template a
// container came from: the file of its name in the template cache or
// beside the new template, if its image digest is the marker's.
func cachedTemplate(ctx context.Context, h *pct.Host, m pct.Marker, lo pct.LoadOptions, dir string, store *rootfs.Store, image string) *pct.Template {
	if m.Digest == "" {
		return nil
	}
	var dirs []string
	if dir != "" {
		dirs = append(dirs, dir)
	} else if store != nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(store.Dir), "templates"))
	}
	if IsTemplate(image) && !pct.IsVolumeID(image) {
		dirs = append(dirs, filepath.Dir(image))
	}
	_, file, _ := strings.Cut(m.Template, ":vztmpl/")
	for _, d := range dirs {
		path := filepath.Join(d, file)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if t, err := pct.LoadTemplate(ctx, h, path, lo); err == nil && t.Digest == m.Digest {
			return t
		}
	}
	return nil
}

// markerImageOK: a marker's image is used only as a registry reference.
func markerImageOK(s string) bool {
	if IsTemplate(s) {
		return false
	}
	r, err := rootfs.ParseRef(s)
	return err == nil && r.Transport == rootfs.TransportDocker
}

// markerTemplateOK: a marker's template is used only as a volume of a
// template storage (STORAGE:vztmpl/FILE), never as a path.
func markerTemplateOK(s string) bool {
	storage, file, ok := strings.Cut(s, ":vztmpl/")
	return ok && pct.IsVolumeID(s) && storage != "" && !strings.ContainsAny(storage, "/") && file != "" && !strings.Contains(file, "/") && file != ".." && file != "."
}

// resolveCT is a VMID, or the VMID of the container of that name.
func resolveCT(ctx context.Context, h *pct.Host, ct string) (int, error) {
	if id, err := strconv.Atoi(ct); err == nil {
		return id, nil
	}
	r, err := h.FindByName(ctx, ct)
	if err != nil {
		return 0, err
	}
	if r == nil {
		return 0, &pct.Error{Kind: pct.ErrNotFound, Param: "vmid", Msg: fmt.Sprintf("no container is named %s", ct), Fix: "give its VMID or the name create gave it"}
	}
	return r.VMID, nil
}
