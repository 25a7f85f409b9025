package rootfs

import (
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/progress"
	"net"
	"syscall"

	"archive/tar"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Errors a caller may decide on (errors.Is).
var (
	ErrNotFound     = errors.New("image not found")
	ErrUnauthorized = errors.New("not authorized")
	ErrPlatform     = errors.New("platform not available")
	// ErrPlainHTTP: the registry answers HTTPS requests over plain HTTP;
	// SourceOptions.Insecure allows it.
	ErrPlainHTTP = errors.New("registry speaks plain HTTP")
	// ErrUntrustedCert: the registry's TLS certificate does not verify;
	// install its CA, or set SourceOptions.Insecure.
	ErrUntrustedCert = errors.New("registry certificate not trusted")
	// ErrRegistryTimeout: the registry did not answer within the
	// context's deadline (or the transport's response timeout).
	ErrRegistryTimeout = errors.New("registry did not answer in time")
)

// PlatformError says that an image has no manifest for the platform asked
// for, and which platforms it has (errors.Is(err, ErrPlatform) holds).
type PlatformError struct {
	// Image is the reference, or the index, asked for.
	Image string
	Want  Platform
	// Offered are the platforms the image has, sorted; one for a
	// single-platform image.
	Offered []string
	// Single is set for a single-platform image, whose one platform
	// (Offered[0]) may still be asked for explicitly.
	Single bool
}

func (e *PlatformError) Error() string {
	switch {
	case e.Single:
		return fmt.Sprintf("%s is a single-platform image for %s, not %s: ask for %s to use it anyway", e.Image, e.Offered[0], e.Want, e.Offered[0])
	case len(e.Offered) == 0:
		return fmt.Sprintf("%s is an index with no platform-specific image manifests", e.Image)
	}
	return fmt.Sprintf("%s has no image for %s; it has %s: ask for one of them", e.Image, e.Want, strings.Join(e.Offered, ", "))
}

// Is makes errors.Is(err, ErrPlatform) hold.
func (e *PlatformError) Is(target error) bool { return target == ErrPlatform }

// SourceOptions say how to reach an image.
type SourceOptions struct {
	Platform Platform
	// Insecure allows plain HTTP and unverified TLS for registries that are
	// not on loopback (loopback registries always work over HTTP).
	Insecure bool
	// Timeout bounds every registry request without an answer; zero means
	// 2 minutes, enough for a slow registry, short enough for a hung one.
	Timeout time.Duration
	// Keychain defaults to the docker and podman auth files.
	Keychain authn.Keychain
}

// source is one platform's image, resolved from any transport.
type source struct {
	ref      Ref
	img      v1.Image
	digest   v1.Hash // manifest digest as the source has it
	platform Platform
	// name is the image name the layout or archive records, if any.
	name    string
	cleanup func()
	// layout is the OCI layout directory the image is read from, if any:
	// its blobs' sizes on disk are checked before they are read whole.
	layout string
}

func (s *source) Close() {
	if s.cleanup != nil {
		s.cleanup()
	}
}

func openSource(ctx context.Context, ref Ref, opts SourceOptions) (*source, error) {
	return openSourceLimit(ctx, ref, opts, 0)
}

// openSourceLimit is openSource reading, of an oci-archive, only the blobs
// up to maxBlob bytes when maxBlob > 0: indexes, manifests and configs,
// enough for the digest and platform, without copying the layers out.
func openSourceLimit(ctx context.Context, ref Ref, opts SourceOptions, maxBlob int64) (*source, error) {
	if opts.Platform.OS == "" {
		opts.Platform = HostPlatform()
	}
	switch ref.Transport {
	case TransportDocker:
		return openRegistry(ctx, ref, opts)
	case TransportOCI:
		return openLayout(ref, ref.Name, opts.Platform)
	case TransportOCIArchive:
		dir, err := extractOCIArchive(ctx, ref.Name, maxBlob)
		if err != nil {
			return nil, err
		}
		src, err := openLayout(ref, dir, opts.Platform)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		src.cleanup = func() { os.RemoveAll(dir) }
		return src, nil
	case TransportDockerArchive:
		return openDockerArchive(ref, opts.Platform)
	}
	return nil, fmt.Errorf("unknown transport %q", ref.Transport)
}

func registryTransport(opts SourceOptions) *http.Transport {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	t.ResponseHeaderTimeout = timeout
	if opts.Insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked for it with --insecure
	}
	return t
}

// remoteOptions also returns the transport, whose idle connections the
// caller closes when done: a long-lived process (soak tests, factories
// calling nexcage as a library) must not keep sockets per pull.
func remoteOptions(ctx context.Context, opts SourceOptions) ([]remote.Option, *http.Transport) {
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	t := registryTransport(opts)
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(t),
		remote.WithUserAgent("nexcage"),
		remote.WithRetryPredicate(retryable),
	}, t
}

// retryable is go-containerregistry's default retry rule, except that a
// timeout is final: --timeout says how long to wait for a hung registry,
// once, not once per attempt, scheme and request.
func retryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var te interface{ Temporary() bool }
	if errors.As(err, &te) && te.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

func openRegistry(ctx context.Context, ref Ref, opts SourceOptions) (_ *source, err error) {
	nopts := []name.Option{name.WeakValidation}
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref.Name, nopts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %s: %w", ref, err)
	}
	ropts, transport := remoteOptions(ctx, opts)
	src := &source{ref: ref, cleanup: transport.CloseIdleConnections}
	defer func() {
		if err != nil {
			src.Close()
		}
	}()
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, registryError(ref, r, err)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, registryError(ref, r, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, registryError(ref, r, err)
		}
		d, err := choosePlatform(ref.String(), im, opts.Platform)
		if err != nil {
			return nil, err
		}
		if err := src.checkMetadata(d, "the manifest"); err != nil {
			return nil, err
		}
		if src.img, err = idx.Image(d.Digest); err != nil {
			return nil, registryError(ref, r, err)
		}
		src.digest, src.platform = d.Digest, platformOf(d.Platform)
	case desc.MediaType.IsSchema1():
		return nil, fmt.Errorf("%s is a Docker schema 1 image, which is deprecated and unsupported: rebuild or re-push it with a current docker, podman or skopeo", ref)
	case desc.MediaType.IsImage():
		if src.img, err = desc.Image(); err != nil {
			return nil, registryError(ref, r, err)
		}
		src.digest = desc.Digest
		if src.platform, err = checkImagePlatform(src, src.img, opts.Platform); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s is a %s, not a container image", ref, desc.MediaType)
	}
	return src, nil
}

// checkImagePlatform refuses a single-platform image built for another
// machine: unpacked, it would fail at its first exec with "exec format
// error", far from the cause.
func checkImagePlatform(src *source, img v1.Image, want Platform) (Platform, error) {
	ref := src.ref
	if err := src.checkConfig(img); err != nil {
		return Platform{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Platform{}, fmt.Errorf("read the config of %s: %w", ref, err)
	}
	got := Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if got.OS == "" || got.Architecture == "" {
		return want, nil // old images may not say; trust the request
	}
	if !want.Matches(got) {
		return Platform{}, &PlatformError{Image: ref.String(), Want: want, Offered: []string{got.String()}, Single: true}
	}
	return got, nil
}

// registryError turns registry failures into messages that name the
// reference and what to do.
func registryError(ref Ref, r name.Reference, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return errkind.Errorf(ErrNotFound, "%s does not exist in registry %s (HTTP 404): check the repository name and tag", ref, r.Context().RegistryStr())
		case http.StatusUnauthorized:
			return errkind.Errorf(ErrUnauthorized, "registry %s asks for credentials for %s (HTTP 401): log in with `podman login %s` or `docker login %s` (nexcage reads their auth files), or check that the repository exists", r.Context().RegistryStr(), ref, r.Context().RegistryStr(), r.Context().RegistryStr())
		case http.StatusForbidden:
			return errkind.Errorf(ErrUnauthorized, "registry %s refused access to %s with the credentials from the docker/podman auth files (HTTP 403): log in as a user allowed to pull it", r.Context().RegistryStr(), ref)
		}
		for _, d := range terr.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return errkind.Errorf(ErrNotFound, "%s does not exist in registry %s: check the repository name and tag", ref, r.Context().RegistryStr())
			}
		}
		return fmt.Errorf("pull %s: registry %s answered: %w", ref, r.Context().RegistryStr(), err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "timeout awaiting response headers") || errors.Is(err, context.DeadlineExceeded):
		return errkind.Errorf(ErrRegistryTimeout, "pull %s: registry %s did not answer in time: check that it is up, or allow more time", ref, r.Context().RegistryStr())
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return errkind.Errorf(ErrPlainHTTP, "pull %s: registry %s speaks plain HTTP, and insecure registries are not allowed", ref, r.Context().RegistryStr())
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:"):
		return errkind.Errorf(ErrUntrustedCert, "pull %s: the TLS certificate of %s cannot be verified (%v): install its CA, or allow insecure registries", ref, r.Context().RegistryStr(), err)
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host"):
		return fmt.Errorf("pull %s: cannot reach registry %s (%v): check the host name and port, and that the registry runs", ref, r.Context().RegistryStr(), err)
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

const (
	refNameAnnotation        = "org.opencontainers.image.ref.name"
	containerdNameAnnotation = "io.containerd.image.name"
)

// recordedName is the image name a layout's index records for an entry:
// containerd's io.containerd.image.name, or a ref.name that is a whole
// name (podman and buildah write localhost/app:tag) rather than a bare tag.
// Names that are no valid image name are ignored: the index is input.
func recordedName(a map[string]string) string {
	for _, n := range []string{a[containerdNameAnnotation], a[refNameAnnotation]} {
		if validName(n) {
			return n
		}
	}
	return ""
}

func validName(n string) bool {
	if n == "" || len(n) > 255 || !strings.ContainsAny(n, "/:") {
		return false
	}
	_, err := name.NewTag(n, name.WeakValidation)
	return err == nil
}

func openLayout(ref Ref, dir string, want Platform) (*source, error) {
	if fi, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errkind.Errorf(ErrNotFound, "%s: %s is not an OCI image layout (it has no index.json): point at the directory that holds oci-layout, index.json and blobs/", ref, dir)
		}
		return nil, fmt.Errorf("%s: %w", ref, err)
	} else if fi.Size() > MaxMetadataSize {
		return nil, limits.Errorf(nil, limits.MetadataSize, fi.Size(), MaxMetadataSize, "%s: index.json is %s, more than %s, the most nexcage reads of an index: refusing it unread", ref, progress.HumanBytes(fi.Size()), progress.HumanBytes(MaxMetadataSize))
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: read the OCI layout: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: read index.json: %w", ref, err)
	}
	var found []v1.Descriptor
	var tags []string
	for _, d := range im.Manifests {
		t := d.Annotations[refNameAnnotation]
		if t != "" {
			tags = append(tags, t)
		}
		if ref.Tag == "" || t == ref.Tag {
			found = append(found, d)
		}
	}
	sort.Strings(tags)
	switch {
	case len(found) == 0 && ref.Tag != "":
		return nil, errkind.Errorf(ErrNotFound, "%s: the layout has no tag %q; it has: %s", ref, ref.Tag, listOrNone(tags))
	case len(found) == 0:
		return nil, errkind.Errorf(ErrNotFound, "%s: the layout holds no images", ref)
	case len(found) > 1:
		return nil, fmt.Errorf("%s: the layout holds %d images: name one as %s:TAG (tags: %s)", ref, len(found), ref.Name, listOrNone(tags))
	}
	d := found[0]
	src := &source{ref: ref, name: recordedName(d.Annotations), layout: dir}
	if err := src.checkMetadata(d, "the manifest"); err != nil {
		return nil, err
	}
	switch {
	case d.MediaType.IsIndex():
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		cm, err := child.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		pd, err := choosePlatform(ref.String(), cm, want)
		if err != nil {
			return nil, err
		}
		if err := src.checkMetadata(pd, "the manifest"); err != nil {
			return nil, err
		}
		if src.img, err = child.Image(pd.Digest); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		src.digest, src.platform = pd.Digest, platformOf(pd.Platform)
	case d.MediaType.IsImage():
		if src.img, err = idx.Image(d.Digest); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		src.digest = d.Digest
		if src.platform, err = checkImagePlatform(src, src.img, want); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: the entry is a %s, not a container image", ref, d.MediaType)
	}
	return src, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// extractOCIArchive unpacks an oci-archive (a tar of an OCI layout) into a
// temporary directory; with maxBlob > 0, files larger than that are left
// out. Only plain files and directories with clean relative names are
// accepted: an archive is input, not a place to trust.
func extractOCIArchive(ctx context.Context, file string, maxBlob int64) (dir string, err error) {
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", errkind.Errorf(ErrNotFound, "oci-archive %s does not exist", file)
		}
		return "", fmt.Errorf("oci-archive %s: %w", file, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("oci-archive %s: %w", file, err)
	}
	tmp, err := os.MkdirTemp("", "nexcage-oci-archive-")
	if err != nil {
		return "", err
	}
	dir = tmp
	defer func() {
		if err != nil {
			os.RemoveAll(tmp) // dir is "" by the time an error returns
		}
	}()
	// What is extracted is bounded by the archive's own size (only a
	// sparse member claims more) and by the free space where it goes.
	var total int64
	disk := &limits.Disk{Dir: dir}
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("oci-archive %s is not a valid tar archive (%v): it should be what `skopeo copy ... oci-archive:FILE` writes", file, err)
		}
		clean := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if clean == "." {
			continue
		}
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return "", fmt.Errorf("oci-archive %s: member %q points outside the archive: refusing it", file, hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(clean))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return "", err
			}
		case tar.TypeReg:
			if total += hdr.Size; total > fi.Size() {
				return "", archiveClaims(file, "oci-archive", hdr.Name, total, fi.Size())
			}
			if maxBlob > 0 && hdr.Size > maxBlob {
				continue
			}
			if err := disk.Reserve(hdr.Size, fmt.Sprintf("oci-archive %s: member %s", file, quoteName(hdr.Name))); err != nil {
				return "", err
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return "", err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return "", fmt.Errorf("oci-archive %s: extract %s: %w", file, hdr.Name, err)
			}
		default:
			return "", fmt.Errorf("oci-archive %s: member %q is not a file or directory: an OCI archive holds only oci-layout, index.json and blobs", file, hdr.Name)
		}
	}
	return dir, nil
}

func openDockerArchive(ref Ref, want Platform) (*source, error) {
	if _, err := os.Stat(ref.Name); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errkind.Errorf(ErrNotFound, "docker-archive %s does not exist", ref.Name)
		}
		return nil, fmt.Errorf("docker-archive %s: %w", ref.Name, err)
	}
	// go-containerregistry reads the archive's JSON members whole and
	// hashes its layers from end to end: check what they claim first.
	if err := scanDockerArchive(ref.Name); err != nil {
		return nil, err
	}
	var tag *name.Tag
	if ref.Tag != "" {
		t, err := name.NewTag(ref.Tag, name.WeakValidation)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a valid image name inside the archive: %w", ref, ref.Tag, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(ref.Name, tag)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable `docker save` archive (%v): name the image as docker-archive:FILE:REPO:TAG when it holds several", ref, err)
	}
	// Reading the manifest here surfaces "tag not found" and "several
	// images" before anything is written.
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	src := &source{ref: ref, img: img, digest: digest}
	if src.platform, err = checkImagePlatform(src, img, want); err != nil {
		return nil, err
	}
	if ref.Tag != "" {
		src.name = ref.Tag
	} else if m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(ref.Name) }); err == nil && len(m) == 1 && len(m[0].RepoTags) > 0 && validName(m[0].RepoTags[0]) {
		src.name = m[0].RepoTags[0] // what `docker save` and `podman save` record
	}
	return src, nil
}

// resolveMaxBlob is the largest oci-archive member Resolve copies out:
// indexes, manifests and configs are small, and layers need not be read.
var resolveMaxBlob int64 = 4 << 20

// Resolve returns the manifest digest the source has for ref on the
// requested platform, without storing anything: what a build cache
// compares with the digest a template was built from.
func Resolve(ctx context.Context, ref Ref, opts SourceOptions) (string, error) {
	src, err := openSourceLimit(ctx, ref, opts, resolveMaxBlob)
	if err != nil && ref.Transport == TransportOCIArchive {
		src, err = openSource(ctx, ref, opts) // a config over the limit, say
	}
	if err != nil {
		return "", err
	}
	defer src.Close()
	return src.digest.String(), nil
}
