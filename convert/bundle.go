package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/jsonerr"
	"github.com/nexcage/nexcage/internal/limits"
)

// Bundle is an OCI runtime bundle: a config.json and the rootfs it names.
type Bundle struct {
	Dir        string
	ConfigPath string
	Rootfs     string
	Spec       *rspec.Spec
}

const bundleHelp = "a bundle is a directory holding config.json (the OCI runtime config) and the rootfs directory its root.path names (usually rootfs/)"

// ErrNotBundle means a path given as a bundle is none: it, its config.json
// or its rootfs directory is missing. rootfs.Unpack and generate.Bundle
// make bundles.
var ErrNotBundle = errors.New("not an OCI bundle")

// LoadBundle opens a bundle given as its directory or its config.json.
// root.path is resolved against the bundle directory, never the current
// directory.
func LoadBundle(arg string) (*Bundle, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Dir: abs, ConfigPath: filepath.Join(abs, "config.json")}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, errkind.Errorf(ErrNotBundle, "no OCI bundle at %s: the path does not exist; %s", abs, bundleHelp)
	case err != nil:
		return nil, err
	case !fi.IsDir():
		b.Dir, b.ConfigPath = filepath.Dir(abs), abs
	}
	raw, err := limits.ReadFile(b.ConfigPath, limits.MaxMetadata, b.ConfigPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errkind.Errorf(ErrNotBundle, "no OCI bundle at %s: tried %s, which does not exist; %s", arg, b.ConfigPath, bundleHelp)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.ConfigPath, err)
	}
	var spec rspec.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("%s is not a valid OCI runtime config: %s", b.ConfigPath, jsonerr.At(raw, err))
	}
	b.Spec = &spec
	rootPath := "rootfs"
	tried := "root.path is not set, so tried the default "
	if spec.Root != nil && spec.Root.Path != "" {
		rootPath, tried = spec.Root.Path, "root.path is "+spec.Root.Path+", so tried "
	}
	if !filepath.IsAbs(rootPath) {
		rootPath = filepath.Join(b.Dir, rootPath)
	}
	rfi, err := os.Stat(rootPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, errkind.Errorf(ErrNotBundle, "bundle %s has no rootfs: %s%s, which does not exist; %s", b.Dir, tried, rootPath, bundleHelp)
	case err != nil:
		return nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
	case !rfi.IsDir():
		return nil, errkind.Errorf(ErrNotBundle, "bundle %s: the rootfs %s is not a directory; %s", b.Dir, rootPath, bundleHelp)
	}
	b.Rootfs = rootPath
	return b, nil
}

// idMap is the owner translation for this bundle's rootfs: umoci records
// a rootless unpack as uid/gid mappings in config.json.
func (b *Bundle) idMap() IDMap {
	if b.Spec.Linux == nil {
		return IDMap{}
	}
	m := IDMap{UIDs: b.Spec.Linux.UIDMappings, GIDs: b.Spec.Linux.GIDMappings}
	m.Rootless = len(m.UIDs) > 0
	return m
}
