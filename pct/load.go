package pct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/template"
)

// IsVolumeID reports whether s names a template volume on a PVE storage,
// STORAGE:vztmpl/FILE, rather than a local file: a storage id (no "/")
// before the first ":", and the vztmpl content directory after it. A
// path such as ./local:vztmpl/x.tar.zst is a file.
func IsVolumeID(s string) bool {
	storage, rest, ok := strings.Cut(s, ":")
	return ok && storage != "" && !strings.Contains(storage, "/") && strings.HasPrefix(rest, "vztmpl/")
}

// LoadOptions configure LoadTemplate.
type LoadOptions struct {
	// AllowRawLXC drops the lines of the template's .conf that nexcage
	// does not write (each with a warning) instead of refusing the
	// template with a *TemplateConfigError.
	AllowRawLXC bool
	// Progress receives the warnings about dropped lines.
	Progress progress.Reporter
}

// TemplateConfigError is a template's .conf that cannot be deployed:
// unreadable, or (Unsafe set) holding lines nexcage does not write.
type TemplateConfigError struct {
	Path string // the .conf
	// Unsafe lists the refused lines when the file was read; Err then
	// wraps it.
	Unsafe *lxc.UnsafeConfigError
	Err    error
}

func (e *TemplateConfigError) Error() string {
	if e.Unsafe != nil {
		return fmt.Sprintf("the template's config %s has lines nexcage does not write, which a template may not set: %v; remove them", e.Path, e.Err)
	}
	return fmt.Sprintf("the template's config %s cannot be read: %v", e.Path, e.Err)
}

func (e *TemplateConfigError) Unwrap() error { return e.Err }

// LoadTemplate reads what a deploy needs to know about a template: a
// local file (made absolute) with what its .conf and .json sidecars say,
// or a volume id (IsVolumeID) whose file and sidecars h finds on the
// host. The .conf is data from whoever made the template, never
// configuration to trust: only the lines convert writes pass (see
// LoadOptions.AllowRawLXC). A missing local file is an *Error of kind
// ErrNotFound.
func LoadTemplate(ctx context.Context, h *Host, fileOrVolID string, opts LoadOptions) (*Template, error) {
	t := &Template{}
	file := fileOrVolID
	if IsVolumeID(fileOrVolID) && h.Remote() {
		// The API uploads templates but not their sidecars: a volume is
		// deployed with what the flags say (MakePlan checks it is there).
		t.VolID = fileOrVolID
		return t, nil
	}
	if IsVolumeID(fileOrVolID) {
		t.VolID = fileOrVolID
		p, err := h.TemplatePath(ctx, fileOrVolID)
		if err != nil {
			return nil, err
		}
		file = p
	} else {
		abs, err := filepath.Abs(fileOrVolID)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, &Error{Kind: ErrNotFound, Param: "template", Msg: fmt.Sprintf("template %s does not exist", abs), Fix: "build it first or give a volume id STORAGE:vztmpl/FILE"}
		}
		t.File, file = abs, abs
	}
	confPath, jsonPath := template.SidecarPaths(file)
	if raw, err := lxc.ReadConfig(confPath); err == nil {
		c, err := lxc.ParseTemplateConfig(raw)
		var unsafe *lxc.UnsafeConfigError
		switch {
		case errors.As(err, &unsafe) && opts.AllowRawLXC:
			if opts.Progress != nil {
				for _, l := range unsafe.Lines {
					opts.Progress.Warn("%s: dropped %s", confPath, l)
				}
			}
		case unsafe != nil:
			return nil, &TemplateConfigError{Path: confPath, Unsafe: unsafe, Err: err}
		case err != nil:
			return nil, &TemplateConfigError{Path: confPath, Err: err}
		}
		t.Config = c
		t.Sidecars = append(t.Sidecars, confPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, &TemplateConfigError{Path: confPath, Err: err}
	}
	if m, err := template.ReadSidecar(jsonPath); err == nil {
		t.Privileged, t.Volumes, t.SHA256 = m.Privileged, m.Volumes, m.Template.SHA256
		t.Image, t.Digest = m.Source.Reference, m.Source.SourceDigest
		t.Sidecars = append(t.Sidecars, jsonPath)
	}
	if t.VolID != "" {
		t.Sidecars = nil // already beside it on the host
	}
	return t, nil
}
