package convert

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/lxc"
)

type runtimeSpec = rspec.Spec

// Metadata is the NAME.json sidecar: where the template came from, what it
// is, and the options it was built with (the build cache compares those).
type Metadata struct {
	NexcageVersion string            `json:"nexcage_version"`
	Template       TemplateInfo      `json:"template"`
	Source         Source            `json:"source"`
	OS             OSInfo            `json:"os"`
	OSType         string            `json:"ostype"`
	Arch           string            `json:"arch"`
	Privileged     bool              `json:"privileged"`
	Application    bool              `json:"application"`
	Process        *Process          `json:"process,omitempty"`
	Mounts         []Mount           `json:"mounts"`
	Volumes        []string          `json:"volumes"`
	ExposedPorts   []string          `json:"exposed_ports"`
	Labels         map[string]string `json:"labels,omitempty"`
	Options        BuildOptions      `json:"options"`
}

// TemplateInfo describes the archive itself.
type TemplateInfo struct {
	File        string `json:"file"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	Compression string `json:"compression"`
}

// Process is the image's process as the bundle gives it.
type Process struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	UID  uint32   `json:"uid"`
	GID  uint32   `json:"gid"`
	// Groups are the supplementary groups (process.user.additionalGids).
	Groups []uint32 `json:"groups,omitempty"`
}

// Mount is a bundle mount and what it became in the CT config.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
	PVE         string   `json:"pve"` // "mp0", "lxc.mount.entry" or "provided by LXC"
}

// BuildOptions are the options that shape the template's bytes.
type BuildOptions struct {
	Compression     string `json:"compression"`
	Level           int    `json:"level"`
	Privileged      bool   `json:"privileged"`
	SquashHighIDs   bool   `json:"squash_high_ids"`
	SourceDateEpoch int64  `json:"source_date_epoch,omitempty"`
	Name            string `json:"name,omitempty"`
	Version         string `json:"version,omitempty"`
	// Process is nil without overrides, so manifests written before
	// overrides existed still compare equal.
	Process *ProcessOverrides `json:"process,omitempty"`
}

func (p *plan) metadata(spec *rspec.Spec, src Source) Metadata {
	m := Metadata{
		NexcageVersion: p.opts.ToolVersion,
		Template:       TemplateInfo{File: filepath.Base(p.target), Compression: string(p.compression)},
		Source:         src,
		OS:             p.os,
		OSType:         p.config.OSType,
		Arch:           p.arch,
		Privileged:     p.opts.Privileged,
		Application:    !p.system,
		Volumes:        volumes(spec),
		Mounts:         []Mount{},
		ExposedPorts:   []string{},
		Options:        p.buildOptions(),
	}
	if m.Volumes == nil {
		m.Volumes = []string{}
	}
	if ports := spec.Annotations[annotationExposedPorts]; ports != "" {
		m.ExposedPorts = strings.Split(ports, ",")
		sort.Strings(m.ExposedPorts)
	}
	if pr := spec.Process; pr != nil {
		m.Process = &Process{Args: pr.Args, Env: pr.Env, Cwd: pr.Cwd, UID: pr.User.UID, GID: pr.User.GID, Groups: pr.User.AdditionalGids}
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
		pm := Mount{Destination: mt.Destination, Type: mt.Type, Source: mt.Source, Options: mt.Options, PVE: "provided by LXC"}
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

// buildOptions are the options recorded in the manifest and compared by
// the build cache.
func (p *plan) buildOptions() BuildOptions {
	o := BuildOptions{
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
	annotationOS: true, annotationArch: true, annotationVariant: true, annotationCreated: true,
	annotationExposedPorts: true, "org.opencontainers.image.author": true, lxc.AnnotationStopSignal: true,
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9.+-]+`)

// nameComponent makes s safe inside a template name: PVE accepts only
// plain file names, and '_' separates the parts of the name.
func nameComponent(s string) string {
	s = unsafeNameChars.ReplaceAllString(s, "-")
	s = strings.Trim(s, "-.")
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// templateName builds <os>-<osversion>-<name>_<version>_<arch>.tar.zst
// (proxmox.md §1).
func (p *plan) templateName(spec *rspec.Spec, src Source) (string, error) {
	refName, refVersion := refNameVersion(src.Reference)
	if n, v := imageNameVersion(src.Name); n != "" {
		// What the archive says the image is called, rather than what
		// its file happens to be called.
		refName, refVersion = n, v
	}
	name := firstNonEmpty(p.opts.Name, refName, spec.Annotations[annotationTitle])
	version := firstNonEmpty(p.opts.Version, spec.Annotations[annotationVersion], refVersion, createdDate(spec.Annotations[annotationCreated]))
	if name == "" {
		return "", fmt.Errorf("cannot name the template: the bundle does not say which image it came from; pass --name (and --template-version), or -o FILE")
	}
	if version == "" {
		version = "1"
	}
	osPart := nameComponent(p.os.ID)
	if osPart == "" {
		osPart = "unmanaged"
	}
	if v := osVersion(p.os.VersionID); v != "" {
		osPart += "-" + nameComponent(v)
	}
	parts := []string{osPart + "-" + nameComponent(name), nameComponent(version), p.arch}
	for _, part := range parts {
		if part == "" || strings.HasPrefix(part, "-") {
			return "", fmt.Errorf("cannot build a template name from name %q and version %q: pass --name and --template-version with letters or digits", name, version)
		}
	}
	return strings.Join(parts, "_") + p.compression.Suffix(), nil
}

// osVersion keeps major.minor: alpine 3.20.3 is "3.20", as PVE's own
// templates name it.
func osVersion(v string) string {
	parts := strings.Split(v, ".")
	if len(parts) > 2 {
		parts = parts[:2]
	}
	return strings.Join(parts, ".")
}

// refNameVersion takes the repository base name and tag from a canonical
// reference (docker://host/repo/name:tag, oci:/path/layout:tag).
func refNameVersion(ref string) (string, string) {
	if ref == "" {
		return "", ""
	}
	if i := strings.Index(ref, "://"); i >= 0 {
		ref = ref[i+3:]
	} else if i := strings.Index(ref, ":"); i >= 0 {
		ref = ref[i+1:]
	}
	ref, _, _ = strings.Cut(ref, "@")
	tag := ""
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i+1:], "/") {
		ref, tag = ref[:i], ref[i+1:]
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	name = strings.TrimSuffix(name, filepath.Ext(name))
	if tag == "latest" {
		tag = ""
	}
	return name, tag
}

// imageNameVersion takes the repository base name and tag from an image
// name (localhost/app:1.0, docker.io/library/alpine:3.20).
func imageNameVersion(n string) (string, string) {
	n, _, _ = strings.Cut(n, "@")
	tag := ""
	if i := strings.LastIndex(n, ":"); i >= 0 && !strings.Contains(n[i+1:], "/") {
		n, tag = n[:i], n[i+1:]
	}
	if tag == "latest" {
		tag = ""
	}
	return n[strings.LastIndex(n, "/")+1:], tag
}

func createdDate(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || t.IsZero() || t.Unix() <= 0 {
		return ""
	}
	return t.UTC().Format("20060102")
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
