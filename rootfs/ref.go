// Package rootfs owns the first stage of the pipeline: image references and
// their transports, pulling one platform of an image into the OCI layout
// store, and unpacking a stored image into an OCI runtime bundle with umoci.
package rootfs

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Transport names follow skopeo and podman, so references users already
// have in scripts work unchanged.
type Transport string

const (
	TransportDocker        Transport = "docker"
	TransportOCI           Transport = "oci"
	TransportOCIArchive    Transport = "oci-archive"
	TransportDockerArchive Transport = "docker-archive"
)

// Ref is a parsed image reference.
type Ref struct {
	Transport Transport
	// Name is the registry reference for docker://, else the file or
	// directory path (made absolute, so a stored tag means the same thing
	// from every working directory).
	Name string
	// Tag is the tag inside a layout or archive (oci:DIR:TAG,
	// docker-archive:FILE:REF); empty means "the only image there".
	Tag string
}

// ParseRef parses REF, docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG]
// and docker-archive:FILE[:REF].
func ParseRef(s string) (Ref, error) {
	if strings.TrimSpace(s) == "" {
		return Ref{}, fmt.Errorf("empty image reference: give one like docker://alpine:3.20, oci:DIR:TAG, oci-archive:FILE or docker-archive:FILE")
	}
	transport, rest, hasTransport := strings.Cut(s, ":")
	if hasTransport {
		switch Transport(transport) {
		case TransportDocker:
			if !strings.HasPrefix(rest, "//") {
				return Ref{}, fmt.Errorf("image reference %q: the docker transport is written docker://REGISTRY/REPO:TAG", s)
			}
			return parseRegistryRef(s, strings.TrimPrefix(rest, "//"))
		case TransportOCI, TransportOCIArchive, TransportDockerArchive:
			return parsePathRef(s, Transport(transport), rest)
		}
		// Anything else with a colon is a bare registry reference such as
		// localhost:5000/app:1 or alpine:3.20.
	}
	return parseRegistryRef(s, s)
}

func parseRegistryRef(orig, s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("image reference %q names no image: write docker://REGISTRY/REPO:TAG", orig)
	}
	// WeakValidation accepts what `docker pull` accepts (default registry,
	// library/ prefix, default tag); StrictValidation would refuse "alpine".
	r, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q is not a valid registry reference (%v): write REGISTRY/REPO[:TAG|@sha256:DIGEST], e.g. docker.io/library/alpine:3.20", orig, err)
	}
	return Ref{Transport: TransportDocker, Name: r.Name()}, nil
}

// parsePathRef splits PATH[:TAG] at the first colon, as skopeo does: paths
// cannot contain colons, tags (docker-archive's REPO:TAG) can.
func parsePathRef(orig string, t Transport, rest string) (Ref, error) {
	path, tag, hasTag := strings.Cut(rest, ":")
	if path == "" {
		return Ref{}, fmt.Errorf("image reference %q names no path: write %s:PATH[:TAG]", orig, t)
	}
	if hasTag && tag == "" {
		return Ref{}, fmt.Errorf("image reference %q has an empty tag after ':': drop the colon or name the tag", orig)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Ref{}, fmt.Errorf("image reference %q: %w", orig, err)
	}
	return Ref{Transport: t, Name: abs, Tag: tag}, nil
}

// String renders the reference in canonical transport:name[:tag] form; it is
// the key under which the store records the image.
func (r Ref) String() string {
	switch r.Transport {
	case TransportDocker:
		return "docker://" + r.Name
	default:
		if r.Tag != "" {
			return string(r.Transport) + ":" + r.Name + ":" + r.Tag
		}
		return string(r.Transport) + ":" + r.Name
	}
}

// Local reports whether the image is a layout or an archive on this
// machine, which is cheap to read again, rather than in a registry.
func (r Ref) Local() bool { return r.Transport != TransportDocker }

// ShortName is the image's repository base name without tag ("alpine" for
// docker://docker.io/library/alpine:3.20), used to name templates.
func (r Ref) ShortName() string {
	n := r.Name
	switch r.Transport {
	case TransportDocker:
		if ref, err := name.ParseReference(n, name.WeakValidation); err == nil {
			n = ref.Context().RepositoryStr()
		}
	default:
		if r.Tag != "" {
			n = r.Tag
			if i := strings.LastIndex(n, ":"); i >= 0 {
				n = n[:i]
			}
		} else {
			n = strings.TrimSuffix(filepath.Base(n), filepath.Ext(n))
		}
	}
	if i := strings.LastIndex(n, "/"); i >= 0 {
		n = n[i+1:]
	}
	return n
}

// Version is the tag of a registry reference ("" for digests and paths).
func (r Ref) Version() string {
	switch r.Transport {
	case TransportDocker:
		if t, err := name.NewTag(r.Name, name.WeakValidation); err == nil {
			return t.TagStr()
		}
	default:
		if i := strings.LastIndex(r.Tag, ":"); i >= 0 {
			return r.Tag[i+1:]
		}
		return r.Tag
	}
	return ""
}
