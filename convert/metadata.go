package convert

import (
	"errors"
	"path/filepath"
	"sort"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/template"
)

type runtimeSpec = rspec.Spec

// sidecar is what NAME.json records about the template p writes.
func (p *plan) sidecar(spec *rspec.Spec, src template.Source) template.Sidecar {
	m := template.Sidecar{
		NexcageVersion: p.opts.ToolVersion,
		Template:       template.TemplateInfo{File: filepath.Base(p.target), Compression: string(p.compression)},
		Source:         src,
		OS:             p.os,
		OSType:         p.config.OSType,
		Arch:           p.arch,
		Privileged:     p.opts.Privileged,
		Application:    !p.system,
		Volumes:        volumes(spec),
		Mounts:         []template.Mount{},
		ExposedPorts:   []string{},
		Recipe:         p.recipe(),
	}
	if m.Volumes == nil {
		m.Volumes = []string{}
	}
	if ports := spec.Annotations[annotation.ExposedPorts]; ports != "" {
		m.ExposedPorts = strings.Split(ports, ",")
		sort.Strings(m.ExposedPorts)
	}
	if pr := spec.Process; pr != nil {
		m.Process = &template.Process{Args: pr.Args, Env: pr.Env, Cwd: pr.Cwd, UID: pr.User.UID, GID: pr.User.GID, Groups: pr.User.AdditionalGids}
	}
	labels := map[string]string{}
	for k, v := range spec.Annotations {
		if !umociAnnotations[k] && !strings.HasPrefix(k, "io.nexcage.") {
			labels[k] = v
		}
	}
	if len(labels) > 0 {
		m.Labels = labels
	}
	mp := 0
	vols := map[string]bool{}
	for _, v := range m.Volumes {
		vols[filepath.Clean(v)] = true
	}
	for _, mt := range spec.Mounts {
		pm := template.Mount{Destination: mt.Destination, Type: mt.Type, Source: mt.Source, Options: mt.Options, PVE: "provided by LXC"}
		switch {
		case mt.Type == "tmpfs" && vols[filepath.Clean(mt.Destination)]:
			pm.PVE = "image volume: storage at deploy (--volume-size)"
		case mp < len(p.config.MountPoints) && p.config.MountPoints[mp].Path == cleanAbs(mt.Destination) && p.config.MountPoints[mp].Volume == mt.Source:
			pm.PVE = p.config.MountPoints[mp].Key()
			mp++
		case mt.Type == "tmpfs" && !lxcProvidedPath(mt.Destination):
			pm.PVE = "lxc.mount.entry"
		}
		m.Mounts = append(m.Mounts, pm)
	}
	return m
}

// recipe is what the sidecar records of the options, and what the build
// cache compares.
func (p *plan) recipe() template.Recipe {
	o := template.Recipe{
		Compression: string(p.compression), Level: p.opts.Level,
		Privileged: p.opts.Privileged, SquashHighIDs: p.opts.SquashHighIDs,
		Name: p.opts.Name, Version: p.opts.Version,
	}
	if !p.opts.Process.IsZero() {
		o.Process = p.opts.Process
	}
	if !p.opts.SourceDateEpoch.IsZero() {
		o.SourceDateEpoch = p.opts.SourceDateEpoch.Unix()
	}
	return o
}

func cleanAbs(p string) string { return filepath.Clean(p) }

func lxcProvidedPath(p string) bool {
	switch filepath.Clean(p) {
	case "/dev", "/dev/shm", "/proc", "/sys", "/dev/pts", "/dev/mqueue", "/sys/fs/cgroup":
		return true
	}
	return false
}

// umociAnnotations are what umoci derives from the image config; every
// other annotation of an unpacked bundle is an image label.
var umociAnnotations = map[string]bool{
	annotation.OS: true, annotation.Arch: true, annotation.Variant: true, annotation.Created: true,
	annotation.ExposedPorts: true, "org.opencontainers.image.author": true, lxc.AnnotationStopSignal: true,
}

// templateName builds <os>-<osversion>-<name>_<version>_<arch>.tar.zst
// (proxmox.md §1) by template.Name's rules. Without a name it fails with
// template.ErrUnnamed (Options.Name or Output avoid it), with a name
// that keeps no letter or digit with a *template.NameError.
func (p *plan) templateName(spec *rspec.Spec, src template.Source) (string, error) {
	name, err := template.Name(template.NameParts{
		OSID: p.os.ID, OSVersion: p.os.VersionID,
		Name: p.opts.Name, Version: p.opts.Version,
		ImageName: src.Name, Reference: src.Reference,
		Title: spec.Annotations[annotation.Title], LabelVersion: spec.Annotations[annotation.Version],
		Created: spec.Annotations[annotation.Created],
		Arch:    p.arch, Compression: p.compression,
	})
	var ne *template.NameError
	switch {
	case errors.Is(err, template.ErrUnnamed):
		return "", errkind.Errorf(template.ErrUnnamed, "cannot name the template: the bundle does not say which image it came from")
	case errors.As(err, &ne):
		return "", errkind.Errorf(ne, "cannot build a template name from name %q and version %q: each needs letters or digits", ne.Name, ne.Version)
	}
	return name, err
}
