package template

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/jsonerr"
	"github.com/nexcage/nexcage/internal/limits"
)

// Sidecar is the NAME.json file beside a template: where the template came
// from, what it is, and the recipe it was built with (a build compares the
// recipe to decide whether the template is up to date).
type Sidecar struct {
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
	Recipe         Recipe            `json:"options"`
}

// TemplateInfo describes the archive itself.
type TemplateInfo struct {
	File        string `json:"file"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	Compression string `json:"compression"`
}

// Source identifies where a rootfs came from, for the sidecar and for
// naming.
type Source struct {
	Reference    string `json:"reference,omitempty"`
	Digest       string `json:"digest,omitempty"`
	SourceDigest string `json:"source_digest,omitempty"`
	Platform     string `json:"platform,omitempty"`
	// Name is the image name the layout or archive records (podman's
	// localhost/app:tag), which names the template before the path does.
	Name string `json:"name,omitempty"`
}

// OSInfo is what PVE will see in the rootfs (proxmox.md §3).
type OSInfo struct {
	ID        string `json:"id,omitempty"`         // os-release ID
	VersionID string `json:"version_id,omitempty"` // os-release VERSION_ID
	// OSType is the ostype PVE will use: a distribution it manages, or
	// "unmanaged" when it would refuse the image or there is no OS at all.
	OSType string `json:"ostype"`
	// Why explains an unmanaged OSType.
	Why string `json:"why,omitempty"`
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

// Recipe is what shapes a template's bytes besides the rootfs: the same
// rootfs and recipe give the same template.
type Recipe struct {
	Compression     string `json:"compression"`
	Level           int    `json:"level"`
	Privileged      bool   `json:"privileged"`
	SquashHighIDs   bool   `json:"squash_high_ids"`
	SourceDateEpoch int64  `json:"source_date_epoch,omitempty"`
	Name            string `json:"name,omitempty"`
	Version         string `json:"version,omitempty"`
	// Process is nil without overrides, so sidecars written before
	// overrides existed still compare equal.
	Process *ProcessOverrides `json:"process,omitempty"`
}

// ProcessOverrides replace parts of the image's process, as docker's and
// podman's run flags do. The zero value changes nothing. They are part of
// the recipe, so a template built with others is not up to date.
type ProcessOverrides struct {
	// Entrypoint replaces the image's Entrypoint and drops its Cmd (as
	// docker run --entrypoint does) unless Cmd is set too. nil: the
	// image's.
	Entrypoint *[]string `json:"entrypoint,omitempty"`
	// Cmd replaces the image's Cmd, after the entrypoint. nil: the image's.
	Cmd *[]string `json:"cmd,omitempty"`
	// Env are NAME=VALUE pairs, each replacing the image's variable of that
	// name or added after them, in order.
	Env []string `json:"env,omitempty"`
	// User is NAME|UID[:GROUP|GID]; names are looked up in the rootfs's
	// /etc/passwd and /etc/group, and a user without a group gets its
	// primary group (0 for a uid /etc/passwd does not list).
	User string `json:"user,omitempty"`
	// Workdir is the absolute working directory.
	Workdir string `json:"workdir,omitempty"`
}

// IsZero reports whether o overrides nothing.
func (o *ProcessOverrides) IsZero() bool {
	return o == nil || o.Entrypoint == nil && o.Cmd == nil && len(o.Env) == 0 && o.User == "" && o.Workdir == ""
}

// SidecarPaths returns the .conf and .json paths that belong to a template
// file (NAME.tar.zst → NAME.conf, NAME.json; a plain NAME.tar too).
func SidecarPaths(file string) (conf, json string) {
	base := file
	lower := strings.ToLower(file)
	// The suffixes CompressionFromName knows, and a plain tar's.
	for _, suffix := range []string{Zstd.Suffix(), Gzip.Suffix(), XZ.Suffix(), ".tgz", ".tar"} {
		if strings.HasSuffix(lower, suffix) {
			base = file[:len(file)-len(suffix)]
			break
		}
	}
	return base + ".conf", base + ".json"
}

// ErrNotSidecar marks a .json file that is not a sidecar nexcage wrote:
// not JSON, not of the sidecar's shape, or recording no template sha256.
var ErrNotSidecar = errors.New("not a nexcage sidecar")

// ReadSidecar reads a template's .json sidecar. The file is untrusted: a
// file that is not regular, does not parse or records no template sha256
// is an ErrNotSidecar, and one larger than nexcage reads of any metadata
// (4 MiB) is refused unread. A missing file gives an error
// errors.Is(err, fs.ErrNotExist) recognises.
func ReadSidecar(path string) (*Sidecar, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		// A FIFO would block the read; a directory has nothing to read.
		return nil, errkind.Errorf(ErrNotSidecar, "%s is not a regular file: it is not a nexcage .json sidecar", filepath.Base(path))
	}
	raw, err := limits.ReadFile(path, limits.MaxMetadata, path)
	if err != nil {
		return nil, err
	}
	var s Sidecar
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, errkind.Errorf(ErrNotSidecar, "%s is not a nexcage .json sidecar: %s", filepath.Base(path), jsonerr.At(raw, err))
	}
	if s.Template.SHA256 == "" {
		return nil, errkind.Errorf(ErrNotSidecar, "%s records no template sha256: it is not a nexcage .json sidecar", filepath.Base(path))
	}
	return &s, nil
}
