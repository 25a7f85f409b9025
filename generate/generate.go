// Package generate makes OCI runtime bundles from what is not an image:
// a directory rootfs (debootstrap, a build script) or an existing Proxmox
// VE template, plus the runtime-spec config.json for them (`generate
// spec`). Every bundle it writes is one convert maps without loss: a
// template turned back into a bundle converts to the same template.
package generate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/template"
)

// Options configure Bundle and Spec.
type Options struct {
	// Rootfs is a directory to copy into BUNDLE/rootfs (Bundle).
	Rootfs string
	// Link makes root.path name Rootfs instead of copying it.
	Link bool
	// Template is a template file to extract into BUNDLE/rootfs (Bundle).
	Template string
	// Force replaces a non-empty BUNDLE (Bundle) or an existing
	// config.json (Spec).
	Force bool
	// Spec holds the process and container settings.
	Spec SpecOptions
	// Progress receives the steps and byte counts; nil reports nothing.
	Progress progress.Reporter

	// rootless forces (or, false, forbids) a rootless rootfs; nil: rootless
	// exactly when not running as root. Tests set it.
	rootless *bool
}

// Result says what was written.
type Result struct {
	Bundle string `json:"bundle"`
	Config string `json:"config"`
	// Rootfs is the bundle's rootfs: BUNDLE/rootfs, or the directory
	// Link references.
	Rootfs string `json:"rootfs"`
	// From is "spec", "rootfs", "link" or "template".
	From string `json:"from"`
	// Source is the directory or template the bundle was made from.
	Source   string `json:"source,omitempty"`
	Entries  int    `json:"entries,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	Rootless bool   `json:"rootless"`
	// Process is the config's process.args.
	Process []string `json:"process"`
	// Arch is the org.opencontainers.image.architecture annotation.
	Arch string `json:"arch,omitempty"`
	// Sidecars are the template's .json and .conf that were read.
	Sidecars []string `json:"sidecars,omitempty"`
	// ConvertRecipe is what convert.Options needs to give the template's
	// bytes back: the compression, level, privileged, squash and name
	// choices its .json sidecar records, each zero where it is convert's
	// default. nil without a .json sidecar.
	ConvertRecipe *template.Recipe `json:"-"`
	Warnings      []string         `json:"warnings,omitempty"`
}

func (o Options) isRootless() bool {
	if o.rootless != nil {
		return *o.rootless
	}
	return os.Geteuid() != 0
}

// Spec writes BUNDLE/config.json alone, as `runc spec` does: a default
// process (the rootfs's /sbin/init when root.path already holds one, else
// /bin/sh) with the flags applied. An existing config.json is replaced
// only with Force.
func Spec(ctx context.Context, bundle string, opts Options) (*Result, error) {
	o, err := opts.Spec.parse()
	if err != nil {
		return nil, err
	}
	if bundle == "" {
		bundle = "."
	}
	bundle, err = filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(bundle); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("bundle %s is not a directory: give the directory to write config.json into", bundle)
	}
	config := filepath.Join(bundle, "config.json")
	if _, err := os.Lstat(config); err == nil && !opts.Force {
		return nil, errkind.Errorf(ErrBundleExists, "%s already exists", config)
	}
	spec := BaseSpec()
	rootPath := "rootfs"
	if opts.Spec.RootPath != "" {
		rootPath = filepath.Clean(opts.Spec.RootPath)
	}
	spec.Root.Path = rootPath
	rootDir := rootPath
	if !filepath.IsAbs(rootDir) {
		rootDir = filepath.Join(bundle, rootDir)
	}
	var facts rootfsFacts
	if fi, err := os.Stat(rootDir); err == nil && fi.IsDir() {
		facts = inspect(rootDir)
		spec.Process.Args = facts.defaultArgs()
		setArch(spec, facts, true)
	}
	if err := finishSpec(spec, o, facts, opts.isRootless()); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return nil, fmt.Errorf("create bundle directory %s: %w", bundle, err)
	}
	raw, err := marshalSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(config, raw, 0o644); err != nil {
		return nil, err
	}
	return &Result{Bundle: bundle, Config: config, Rootfs: rootDir, From: "spec", Rootless: opts.isRootless(),
		Process: spec.Process.Args, Arch: spec.Annotations[annotation.Arch]}, nil
}

// setArch records the rootfs's architecture as the image annotations
// convert reads (with the OS when withOS: a rootfs directory is a Linux
// one).
func setArch(spec *rspec.Spec, f rootfsFacts, withOS bool) {
	if f.arch == "" {
		return
	}
	if withOS {
		spec.Annotations[annotation.OS] = "linux"
	}
	spec.Annotations[annotation.Arch] = f.arch
	if f.variant != "" {
		spec.Annotations[annotation.Variant] = f.variant
	}
}

func marshalSpec(spec *rspec.Spec) ([]byte, error) {
	raw, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(raw, '\n'), nil
}

// ErrNoSource means Bundle was given neither Options.Rootfs nor
// Options.Template.
var ErrNoSource = errors.New("say what to make the bundle from: a rootfs directory or a template file")

// ErrRootfsNotDir means Options.Rootfs is not a directory.
var ErrRootfsNotDir = errors.New("rootfs is not a directory")

// SourceInBundleError means the bundle would hold its own source: Bundle
// replaces the bundle directory whole, the source with it.
type SourceInBundleError struct {
	Source, Bundle string
	// Template says Source is a template file (else a rootfs directory).
	Template bool
}

func (e *SourceInBundleError) Error() string {
	if e.Template {
		return fmt.Sprintf("the template %s is inside the bundle %s, which a forced generate replaces: choose another bundle directory", e.Source, e.Bundle)
	}
	return fmt.Sprintf("the rootfs %s is inside the bundle %s, which generate replaces: for a rootfs already in place, write its config.json alone (Spec)", e.Source, e.Bundle)
}

// Bundle makes BUNDLE from opts.Rootfs (copied, or referenced with Link)
// or opts.Template (extracted safely, with process, mounts, hostname and
// labels from its sidecars). BUNDLE is assembled under a temporary name
// beside it and renamed into place: a failure leaves nothing, and Force
// never loses an old bundle unless the new one is complete.
func Bundle(ctx context.Context, bundle string, opts Options) (res *Result, err error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	o, err := checkBundleArgs(bundle, opts)
	if err != nil {
		return nil, err
	}
	if res, err = bundleSource(bundle, opts); err != nil {
		return nil, err
	}
	out, err := atomicfile.NewDir(res.Bundle, opts.Force)
	if err != nil {
		return nil, err
	}
	if err := out.Create(); err != nil {
		return nil, err
	}
	defer out.Cleanup(&err)
	var spec *rspec.Spec
	var facts rootfsFacts
	switch res.From {
	case "link":
		rep.Step("referencing the rootfs %s from %s", res.Source, res.Bundle)
		facts = inspect(res.Source)
		spec = rootfsSpec(facts)
		spec.Root.Path = res.Source
	case "rootfs":
		rep.Step("copying the rootfs %s into %s", res.Source, res.Rootfs)
		if facts, err = copyRootfs(ctx, out.Path, res, rep); err != nil {
			return nil, err
		}
		spec = rootfsSpec(facts)
	case "template":
		if spec, facts, err = extractTemplate(ctx, out.Path, res, rep); err != nil {
			return nil, err
		}
	}
	if err := finishSpec(spec, o, facts, res.Rootless); err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		rep.Warn("%s", w)
	}
	if err := writeBundle(ctx, out, spec); err != nil {
		return nil, err
	}
	res.Process = spec.Process.Args
	res.Arch = spec.Annotations[annotation.Arch]
	return res, nil
}

// checkBundleArgs refuses options that do not fit together and parses the
// spec options, before anything is read or written.
func checkBundleArgs(bundle string, opts Options) (*overrides, error) {
	switch {
	case opts.Rootfs != "" && opts.Template != "":
		return nil, conflictErr(FieldRootfs, FieldTemplate, "are two different sources: give one of them")
	case opts.Rootfs == "" && opts.Template == "":
		return nil, ErrNoSource
	case opts.Link && opts.Rootfs == "":
		return nil, &OptionError{Field: FieldLink, Msg: "references a rootfs directory; a template is always extracted"}
	case bundle == "":
		return nil, &OptionError{Msg: "give the bundle directory to write"}
	}
	o, err := opts.Spec.parse()
	if err != nil {
		return nil, err
	}
	if opts.Spec.RootPath != "" {
		return nil, optErr(FieldRootPath, opts.Spec.RootPath, "root.path is set by the source: Rootfs names the directory to copy here")
	}
	return o, nil
}

// bundleSource checks the source (a rootfs directory or a template file)
// and where it is against the bundle, which is replaced whole, and starts
// the Result.
func bundleSource(bundle string, opts Options) (*Result, error) {
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	res := &Result{Bundle: bundle, Config: filepath.Join(bundle, "config.json"), Rootfs: filepath.Join(bundle, "rootfs"), Rootless: opts.isRootless()}
	if opts.Rootfs != "" {
		res.From = "rootfs"
		if res.Source, err = checkRootfsSource(opts.Rootfs); err != nil {
			return nil, err
		}
		if atomicfile.Within(bundle, res.Source) {
			return nil, fmt.Errorf("bundle %s is inside the rootfs %s: choose a bundle directory outside the rootfs", bundle, res.Source)
		}
		if atomicfile.Within(res.Source, bundle) {
			return nil, &SourceInBundleError{Source: res.Source, Bundle: bundle}
		}
		if opts.Link {
			res.From, res.Rootfs = "link", res.Source
		}
		return res, nil
	}
	res.From = "template"
	if res.Source, err = filepath.Abs(opts.Template); err != nil {
		return nil, err
	}
	fi, err := os.Stat(res.Source)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("template %s does not exist: give the path of a .tar.zst, .tar.gz or .tar.xz template", res.Source)
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("template %s is not a file: give the path of a .tar.zst, .tar.gz or .tar.xz template", res.Source)
	}
	if atomicfile.Within(res.Source, bundle) {
		return nil, &SourceInBundleError{Source: res.Source, Bundle: bundle, Template: true}
	}
	return res, nil
}

// rootfsSpec is the config for a rootfs directory: its /sbin/init or a
// shell, and its architecture.
func rootfsSpec(facts rootfsFacts) *rspec.Spec {
	spec := BaseSpec()
	spec.Process.Args = facts.defaultArgs()
	setArch(spec, facts, true)
	return spec
}

// copyRootfs copies res.Source into tmp/rootfs with every attribute a
// template keeps.
func copyRootfs(ctx context.Context, tmp string, res *Result, rep progress.Reporter) (rootfsFacts, error) {
	w, err := newWriter(filepath.Join(tmp, "rootfs"), res.Rootless)
	if err != nil {
		return rootfsFacts{}, err
	}
	defer w.close()
	if err := w.copyTree(ctx, res.Source, rep); err != nil {
		return rootfsFacts{}, err
	}
	if err := w.finishDirs(); err != nil {
		return rootfsFacts{}, err
	}
	res.Entries, res.Bytes, res.Warnings = w.entries, w.bytes, w.warnings()
	return inspect(w.root), nil
}

// extractTemplate extracts the template res.Source into tmp/rootfs and
// rebuilds its config from its sidecars.
func extractTemplate(ctx context.Context, tmp string, res *Result, rep progress.Reporter) (*rspec.Spec, rootfsFacts, error) {
	src := res.Source
	sc, err := readSidecars(src)
	if err != nil {
		return nil, rootfsFacts{}, err
	}
	rep.Step("extracting the template %s into %s", src, res.Rootfs)
	// The rootfs directory itself is the template's "./" member.
	w, err := newWriter(filepath.Join(tmp, "rootfs"), res.Rootless)
	if err != nil {
		return nil, rootfsFacts{}, err
	}
	defer w.close()
	st, err := w.extract(ctx, src, rep)
	if err != nil {
		return nil, rootfsFacts{}, err
	}
	if _, ok := w.dirs["."]; !ok {
		w.dirs["."] = meta{mode: 0o755, mtime: time.Unix(0, 0)}
	}
	if err := w.finishDirs(); err != nil {
		return nil, rootfsFacts{}, err
	}
	res.Entries, res.Bytes, res.Warnings = w.entries, w.bytes, w.warnings()
	facts := inspect(w.root)
	spec, _ := sc.spec(facts, src)
	for _, p := range []string{sc.jsonPath, sc.confPath} {
		if p != "" {
			res.Sidecars = append(res.Sidecars, p)
		}
	}
	if m := sc.sidecar; m != nil && m.Template.SHA256 != "" && m.Template.SHA256 != st.sha256 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s describes another template (sha256 %s, this one is %s): its process, mounts and labels were used anyway", sc.jsonPath, m.Template.SHA256, st.sha256))
	}
	res.ConvertRecipe = sc.convertRecipe()
	return spec, facts, nil
}

// finishSpec applies the caller's options over what the source said,
// maps the ids for a rootless bundle, and refuses what convert could not
// map.
func finishSpec(spec *rspec.Spec, o *overrides, facts rootfsFacts, isRootless bool) error {
	applyOverrides(spec, o)
	if isRootless {
		rootless(spec)
	}
	return checkConvertible(spec, facts.hasInit)
}

// writeBundle writes config.json into the finished tree and puts the
// bundle in place.
func writeBundle(ctx context.Context, out *atomicfile.Dir, spec *rspec.Spec) error {
	raw, err := marshalSpec(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out.Path, "config.json"), raw, 0o644); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return out.Commit()
}

// checkRootfsSource says clearly what is wrong with a rootfs source.
func checkRootfsSource(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("rootfs %s does not exist: give the directory that holds the root file system (bin/, etc/, usr/ ...)", abs)
	case err != nil:
		return "", fmt.Errorf("rootfs %s: %w", abs, err)
	case !fi.IsDir():
		return "", errkind.Errorf(ErrRootfsNotDir, "rootfs %s is not a directory: give the directory that holds the root file system (bin/, etc/, usr/ ...)", abs)
	}
	// The real path: a symlinked rootfs is referenced and compared as
	// what it points to.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}
