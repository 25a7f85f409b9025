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

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/progress"
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
	// Spec holds the process and container settings from the flags.
	Spec     SpecFlags
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
	// --link names.
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
	// ConvertFlags are the convert flags that give the template's bytes
	// back, from its manifest's options.
	ConvertFlags []string `json:"convert_flags,omitempty"`
	Warnings     []string `json:"warnings,omitempty"`
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
		return nil, errkind.Errorf(ErrBundleExists, "%s already exists: pass --force to replace it, or choose another BUNDLE", config)
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
	applyOverrides(spec, o)
	if opts.isRootless() {
		rootless(spec)
	}
	if err := checkConvertible(spec, facts.hasInit); err != nil {
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
		Process: spec.Process.Args, Arch: spec.Annotations[annotationArch]}, nil
}

// setArch records the rootfs's architecture as the image annotations
// convert reads (with the OS when withOS: a rootfs directory is a Linux
// one).
func setArch(spec *rspec.Spec, f rootfsFacts, withOS bool) {
	if f.arch == "" {
		return
	}
	if withOS {
		spec.Annotations[annotationOS] = "linux"
	}
	spec.Annotations[annotationArch] = f.arch
	if f.variant != "" {
		spec.Annotations[annotationVariant] = f.variant
	}
}

func marshalSpec(spec *rspec.Spec) ([]byte, error) {
	raw, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(raw, '\n'), nil
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
	switch {
	case opts.Rootfs != "" && opts.Template != "":
		return nil, flagErr("", "", "--rootfs and --template are two different sources: give one of them")
	case opts.Rootfs == "" && opts.Template == "":
		return nil, flagErr("", "", "say what to make the bundle from: --rootfs DIR or --template FILE (or use `generate spec` for config.json alone)")
	case opts.Link && opts.Rootfs == "":
		return nil, flagErr("", "", "--link references a --rootfs directory; a template is always extracted")
	case bundle == "":
		return nil, flagErr("", "", "give the BUNDLE directory to write")
	}
	o, err := opts.Spec.parse()
	if err != nil {
		return nil, err
	}
	if opts.Spec.RootPath != "" {
		return nil, flagErr("rootfs", opts.Spec.RootPath, "root.path is set by the source: --rootfs names the directory to copy here")
	}
	if bundle, err = filepath.Abs(bundle); err != nil {
		return nil, err
	}
	isRootless := opts.isRootless()
	res = &Result{Bundle: bundle, Config: filepath.Join(bundle, "config.json"), Rootfs: filepath.Join(bundle, "rootfs"), Rootless: isRootless}

	var src string
	if opts.Rootfs != "" {
		res.From = "rootfs"
		if src, err = checkRootfsSource(opts.Rootfs); err != nil {
			return nil, err
		}
		if atomicfile.Within(bundle, src) {
			return nil, fmt.Errorf("bundle %s is inside the rootfs %s: choose a bundle directory outside the rootfs", bundle, src)
		}
		if atomicfile.Within(src, bundle) {
			return nil, fmt.Errorf("the rootfs %s is inside the bundle %s, which generate replaces: for a rootfs already in place, write its config.json with `nexcage generate spec %s`", src, bundle, bundle)
		}
		if opts.Link {
			res.From, res.Rootfs = "link", src
		}
	} else {
		res.From = "template"
		if src, err = filepath.Abs(opts.Template); err != nil {
			return nil, err
		}
		fi, err := os.Stat(src)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("template %s does not exist: give the path of a .tar.zst, .tar.gz or .tar.xz template", src)
		case err != nil:
			return nil, err
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("template %s is not a file: give the path of a .tar.zst, .tar.gz or .tar.xz template", src)
		}
		if atomicfile.Within(src, bundle) {
			return nil, fmt.Errorf("the template %s is inside the bundle %s, which --force would replace: choose another bundle directory", src, bundle)
		}
	}
	res.Source = src

	replace, err := atomicfile.CheckDirTarget(bundle, opts.Force, ErrBundleExists)
	if err != nil {
		return nil, err
	}
	createdParent, err := atomicfile.MkdirAllTracked(filepath.Dir(bundle))
	if err != nil {
		return nil, fmt.Errorf("create the parent of bundle %s: %w", bundle, err)
	}
	tmp, err := atomicfile.TempDir(bundle)
	if err != nil {
		if createdParent != "" {
			os.RemoveAll(createdParent)
		}
		return nil, fmt.Errorf("create bundle %s: %w", bundle, err)
	}
	defer func() {
		if err != nil {
			atomicfile.RemoveTree(tmp)
			if createdParent != "" {
				os.RemoveAll(createdParent)
			}
			// Name the bundle the user asked for, not the temporary
			// directory that no longer exists.
			err = errkind.Replace(err, tmp, bundle)
		}
	}()
	// A bundle may hold setuid binaries; keep other users out, as umoci does.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, err
	}

	var spec *rspec.Spec
	var facts rootfsFacts
	switch res.From {
	case "link":
		rep.Step("referencing the rootfs %s from %s", src, bundle)
		facts = inspect(src)
		spec = BaseSpec()
		spec.Root.Path = src
		spec.Process.Args = facts.defaultArgs()
		setArch(spec, facts, true)
	case "rootfs":
		rep.Step("copying the rootfs %s into %s", src, res.Rootfs)
		w := newWriter(filepath.Join(tmp, "rootfs"), isRootless)
		if err := os.Mkdir(w.root, 0o700); err != nil {
			return nil, err
		}
		if err := w.copyTree(ctx, src, rep); err != nil {
			return nil, err
		}
		if err := w.finishDirs(); err != nil {
			return nil, err
		}
		res.Entries, res.Bytes, res.Warnings = w.entries, w.bytes, w.warnings()
		facts = inspect(w.root)
		spec = BaseSpec()
		spec.Process.Args = facts.defaultArgs()
		setArch(spec, facts, true)
	case "template":
		sc, err := readSidecars(src)
		if err != nil {
			return nil, err
		}
		rep.Step("extracting the template %s into %s", src, res.Rootfs)
		w := newWriter(filepath.Join(tmp, "rootfs"), isRootless)
		// The rootfs directory itself is the template's "./" member.
		if err := os.Mkdir(w.root, 0o700); err != nil {
			return nil, err
		}
		st, err := w.extract(ctx, src, rep)
		if err != nil {
			return nil, err
		}
		if _, ok := w.dirs["."]; !ok {
			w.dirs["."] = meta{mode: 0o755, mtime: time.Unix(0, 0)}
		}
		if err := w.finishDirs(); err != nil {
			return nil, err
		}
		res.Entries, res.Bytes, res.Warnings = w.entries, w.bytes, w.warnings()
		facts = inspect(w.root)
		spec, _ = sc.spec(facts, src)
		for _, p := range []string{sc.manifestPath, sc.confPath} {
			if p != "" {
				res.Sidecars = append(res.Sidecars, p)
			}
		}
		if m := sc.manifest; m != nil && m.Template.SHA256 != "" && m.Template.SHA256 != st.sha256 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s describes another template (sha256 %s, this one is %s): its process, mounts and labels were used anyway", sc.manifestPath, m.Template.SHA256, st.sha256))
		}
		res.ConvertFlags = sc.convertFlags()
	}
	applyOverrides(spec, o)
	if isRootless {
		rootless(spec)
	}
	if err := checkConvertible(spec, facts.hasInit); err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		rep.Warn("%s", w)
	}
	raw, err := marshalSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), raw, 0o644); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := atomicfile.ReplaceDir(tmp, bundle, replace, atomicfile.RemoveTree); err != nil {
		return nil, err
	}
	res.Process = spec.Process.Args
	res.Arch = spec.Annotations[annotationArch]
	return res, nil
}

// checkRootfsSource says clearly what is wrong with a --rootfs argument.
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
		return "", fmt.Errorf("rootfs %s is not a directory: give the directory that holds the root file system (bin/, etc/, usr/ ...); for a template file use --template", abs)
	}
	// The real path: a symlinked rootfs is referenced and compared as
	// what it points to.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}
