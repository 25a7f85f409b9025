package template

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// NameParts are what a conventional template name is made of. Each part
// of the name takes the first of its candidates that is set, in the order
// the fields below give.
type NameParts struct {
	// OSID and OSVersion are the rootfs's os-release ID and VERSION_ID:
	// the name starts <os>-<major.minor> ("unmanaged" without an ID).
	OSID, OSVersion string
	// Name and Version are explicit choices; they win over the image's.
	Name, Version string
	// ImageName is the image name a layout or archive records
	// (localhost/app:1.0): its base name and tag come before Reference's.
	ImageName string
	// Reference is the canonical reference the image was pulled by
	// (docker://host/repo/name:tag, oci:/path/layout:tag).
	Reference string
	// Title, LabelVersion and Created are the image's
	// org.opencontainers.image.title, .version and .created (RFC 3339)
	// annotations.
	Title, LabelVersion, Created string
	// Arch is the architecture in Debian's spelling (see DebianArch).
	Arch string
	// Compression picks the suffix.
	Compression Compression
}

// ErrUnnamed is returned by Name when nothing says which image the
// template came from: no Name, ImageName, Reference nor Title.
var ErrUnnamed = errors.New("cannot name the template: nothing says which image it came from")

// NameError is returned by Name when the name, version or architecture
// keeps no letter or digit once made safe for a file name.
type NameError struct {
	Name, Version, Arch string
}

// Error says which parts could not be used.
func (e *NameError) Error() string {
	return fmt.Sprintf("cannot build a template name from name %q, version %q and arch %q: each needs letters or digits", e.Name, e.Version, e.Arch)
}

// Name is the conventional template file name
// <os>-<osversion>-<name>_<version>_<arch><suffix>, the way PVE's own
// templates are named (docs/architecture.md, "The template format"):
//
//   - <name>: Name, else ImageName's repository base name, else
//     Reference's, else Title;
//   - <version>: Version, else LabelVersion, else the tag of ImageName
//     (or, without ImageName, of Reference) unless it is "latest", else
//     Created as YYYYMMDD, else "1";
//   - <osversion> is OSVersion cut to major.minor.
//
// Characters other than A-Za-z0-9.+- become '-', and each part is at most
// 64 characters: PVE accepts only plain file names, and '_' separates the
// parts.
func Name(p NameParts) (string, error) {
	refName, refVersion := refNameVersion(p.Reference)
	if n, v := imageNameVersion(p.ImageName); n != "" {
		// What the archive says the image is called, rather than what
		// its file happens to be called.
		refName, refVersion = n, v
	}
	name := cmp.Or(p.Name, refName, p.Title)
	version := cmp.Or(p.Version, p.LabelVersion, refVersion, createdDate(p.Created))
	if name == "" {
		return "", ErrUnnamed
	}
	if version == "" {
		version = "1"
	}
	osPart := nameComponent(p.OSID)
	if osPart == "" {
		osPart = "unmanaged"
	}
	if v := osVersion(p.OSVersion); v != "" {
		osPart += "-" + nameComponent(v)
	}
	namePart, versionPart := nameComponent(name), nameComponent(version)
	for _, part := range []string{namePart, versionPart, p.Arch} {
		// A name of only unsafe characters is empty once made safe;
		// checked before the os prefix hides that.
		if part == "" || strings.HasPrefix(part, "-") {
			return "", &NameError{Name: name, Version: version, Arch: p.Arch}
		}
	}
	return osPart + "-" + namePart + "_" + versionPart + "_" + p.Arch + p.Compression.Suffix(), nil
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
