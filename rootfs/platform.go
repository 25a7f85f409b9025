package rootfs

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Platform is os/arch[/variant] as --platform spells it.
type Platform struct {
	OS, Architecture, Variant string
}

// HostPlatform is the platform of the machine nexcage runs on. Containers
// are always linux, whatever the build host says.
func HostPlatform() Platform {
	p := Platform{OS: "linux", Architecture: runtime.GOARCH}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// ParsePlatform parses os/arch[/variant].
func ParsePlatform(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Platform{}, fmt.Errorf("platform %q is not os/arch[/variant]: write e.g. linux/amd64 or linux/arm64/v8", s)
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		if parts[2] == "" {
			return Platform{}, fmt.Errorf("platform %q has an empty variant: write e.g. linux/arm/v7", s)
		}
		p.Variant = parts[2]
	}
	if p.OS != "linux" {
		return Platform{}, fmt.Errorf("platform %q: LXC runs only linux images: use linux/%s", s, p.Architecture)
	}
	return p, nil
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Matches reports whether an image of platform other satisfies a request for
// p. An empty requested variant accepts any; arm64 without a variant is v8,
// the only arm64 variant in use.
func (p Platform) Matches(other Platform) bool {
	if p.OS != other.OS || p.Architecture != other.Architecture {
		return false
	}
	if p.Variant == "" {
		return true
	}
	return normVariant(p) == normVariant(other)
}

func normVariant(p Platform) string {
	if p.Architecture == "arm64" && p.Variant == "" {
		return "v8"
	}
	return p.Variant
}

func platformOf(p *v1.Platform) Platform {
	if p == nil {
		return Platform{}
	}
	return Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// choosePlatform picks the manifest for want from an index, or says which
// platforms the index offers.
func choosePlatform(what string, idx *v1.IndexManifest, want Platform) (v1.Descriptor, error) {
	var offered []string
	for _, d := range idx.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		got := platformOf(d.Platform)
		// Attestation manifests ride along in indexes as unknown/unknown.
		if got.OS == "unknown" || got.OS == "" {
			continue
		}
		if want.Matches(got) {
			return d, nil
		}
		offered = append(offered, got.String())
	}
	sort.Strings(offered)
	return v1.Descriptor{}, &PlatformError{Image: what, Want: want, Offered: offered}
}
