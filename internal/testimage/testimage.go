// Package testimage builds, in memory and without network, the container
// images nexcage is tested against: a corpus of small hand-made images that
// each exercise one layer-format corner (whiteouts, hard links into lower
// layers, device nodes, xattrs, ...), the real Alpine minirootfs, and a few
// deliberately hostile layers.
//
// Everything is deterministic: fixed mtimes, fixed config timestamps and
// in-process compression, so digests only change when the content (or the Go
// toolchain's compressor) changes.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// epoch is the mtime of every hand-made entry and the creation time of every
// config. UTC matters: config timestamps are JSON-encoded in their location,
// so a local-time value would make digests depend on the machine's TZ.
var epoch = time.Unix(1700000000, 0).UTC()

// Entry is one tar member of a hand-made layer. Body is the file content for
// regular files.
type Entry struct {
	Hdr  tar.Header
	Body []byte
}

// Compression selects how Layer compresses its tar and which layer media
// type it declares.
type Compression int

const (
	// Uncompressed is application/vnd.oci.image.layer.v1.tar.
	Uncompressed Compression = iota
	// Gzip is application/vnd.oci.image.layer.v1.tar+gzip.
	Gzip
	// Zstd is application/vnd.oci.image.layer.v1.tar+zstd.
	Zstd
	// DockerGzip is gzip with media type
	// application/vnd.docker.image.rootfs.diff.tar.gzip.
	DockerGzip
)

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case DockerGzip:
		return "docker-gzip"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// MediaType is the layer media type Layer declares for c.
func (c Compression) MediaType() (types.MediaType, error) {
	switch c {
	case Uncompressed:
		return types.OCIUncompressedLayer, nil
	case Gzip:
		return types.OCILayer, nil
	case Zstd:
		return types.OCILayerZStd, nil
	case DockerGzip:
		return types.DockerLayer, nil
	}
	return "", fmt.Errorf("testimage: unknown compression %d", int(c))
}

// Dir is a directory entry. A trailing "/" is added when missing because
// that is how every real tar writer spells directories.
func Dir(name string, mode int64) Entry {
	if !strings.HasSuffix(name, "/") {
		name += "/"
	}
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch}}
}

// File is a regular file entry holding body.
func File(name string, mode int64, body string) Entry {
	return Entry{
		Hdr:  tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: epoch},
		Body: []byte(body),
	}
}

// Symlink is a symbolic link name -> target; target is stored verbatim.
func Symlink(name, target string) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

// Hardlink is a hard link name -> target. Tar hard-link targets are paths
// from the root of the archive (not relative to name), so target must be
// spelled the way the target entry was (e.g. "./a/b" in a ./-prefixed layer).
func Hardlink(name, target string) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: epoch}}
}

// CharDev is a character device node.
func CharDev(name string, mode, major, minor int64) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: epoch}}
}

// BlockDev is a block device node.
func BlockDev(name string, mode, major, minor int64) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: epoch}}
}

// Fifo is a named pipe.
func Fifo(name string, mode int64) Entry {
	return Entry{Hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: mode, ModTime: epoch}}
}

// Whiteout is the OCI whiteout marker that deletes path (file or whole
// directory) from the layers below: "dir/name" becomes "dir/.wh.name".
func Whiteout(path string) Entry {
	path = strings.TrimSuffix(path, "/")
	dir, base := "", path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		dir, base = path[:i+1], path[i+1:]
	}
	return File(dir+".wh."+base, 0o644, "")
}

// OpaqueWhiteout is the marker that hides everything lower layers put in dir
// while keeping dir itself (and whatever this layer adds to it).
func OpaqueWhiteout(dir string) Entry {
	return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", 0o644, "")
}

// Owner returns e owned by uid:gid (numeric only: no user or group names are
// recorded, so unpackers cannot remap by name).
func (e Entry) Owner(uid, gid int) Entry {
	e.Hdr.Uid, e.Hdr.Gid = uid, gid
	return e
}

// Xattr returns e carrying the extended attribute key=value as a PAX
// SCHILY.xattr record, the encoding GNU tar, Docker and umoci all use.
func (e Entry) Xattr(key, value string) Entry {
	// Clone so entries sharing a map (copies of one Entry) never alias.
	recs := maps.Clone(e.Hdr.PAXRecords)
	if recs == nil {
		recs = map[string]string{}
	}
	recs["SCHILY.xattr."+key] = value
	e.Hdr.PAXRecords = recs
	e.Hdr.Format = tar.FormatPAX
	return e
}

// Layer builds a v1.Layer from entries, written in the given order with names
// and link targets exactly as given: hostile and odd names must reach the
// unpacker untouched. Two conveniences only: a zero ModTime becomes the fixed
// corpus epoch (a zero time.Time is not even encodable in USTAR), and a
// regular file with Size 0 gets Size = len(Body).
func Layer(entries []Entry, c Compression) (v1.Layer, error) {
	mt, err := c.MediaType()
	if err != nil {
		return nil, err
	}

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for i, e := range entries {
		hdr := e.Hdr
		if hdr.ModTime.IsZero() {
			hdr.ModTime = epoch
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size == 0 {
			hdr.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			return nil, fmt.Errorf("testimage: entry %d %q: %w", i, hdr.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			return nil, fmt.Errorf("testimage: entry %d %q body: %w", i, hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("testimage: closing tar: %w", err)
	}

	compressed, err := compress(raw.Bytes(), c)
	if err != nil {
		return nil, err
	}
	return newMemLayer(mt, compressed, raw.Bytes()), nil
}

// compress is done eagerly and in-process (rather than with
// tarball.LayerFromOpener) so the blob bytes are fixed once, and so an
// uncompressed layer can be declared as such: tarball always compresses.
func compress(raw []byte, c Compression) ([]byte, error) {
	var buf bytes.Buffer
	switch c {
	case Uncompressed:
		return raw, nil
	case Gzip, DockerGzip:
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case Zstd:
		// One goroutine so the frame layout cannot depend on scheduling.
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("testimage: unknown compression %d", int(c))
}

// memLayer is a layer whose blob and tar both live in memory, so every
// Compressed/Uncompressed call returns the very bytes the digests were
// computed from.
type memLayer struct {
	mediaType      types.MediaType
	compressed     []byte
	uncompressed   []byte
	digest, diffID v1.Hash
}

func newMemLayer(mt types.MediaType, compressed, uncompressed []byte) *memLayer {
	return &memLayer{
		mediaType:    mt,
		compressed:   compressed,
		uncompressed: uncompressed,
		digest:       sha256Hash(compressed),
		diffID:       sha256Hash(uncompressed),
	}
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func (l *memLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *memLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}

func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}

// Image builds a single-platform image from layers (bottom first) with the
// given runtime config. The platform is recorded in the config file, which
// is where unpackers and validate look for it. docker=true gives Docker
// schema 2 manifest and config media types, otherwise OCI ones; mixing a
// Docker manifest with OCI layers (or the reverse) is refused because no
// real registry serves such hybrids and they would blur what a case tests.
func Image(layers []v1.Layer, cfg v1.Config, platform v1.Platform, docker bool) (v1.Image, error) {
	manifestType, configType := types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		manifestType, configType = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("testimage: layer %d media type: %w", i, err)
		}
		isDocker := strings.Contains(string(mt), types.DockerVendorPrefix)
		if isDocker != docker {
			return nil, fmt.Errorf("testimage: layer %d has media type %s, which does not belong in a %s manifest", i, mt, manifestType)
		}
	}

	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		OSVersion:    platform.OSVersion,
		OSFeatures:   platform.OSFeatures,
		Variant:      platform.Variant,
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("testimage: config: %w", err)
	}

	// One history entry per layer, as real builders write, so tools that
	// pair history with layers (and skip empty_layer ones) see a sane image.
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{
			Layer:   l,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: fmt.Sprintf("testimage layer %d", i)},
		}
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("testimage: appending layers: %w", err)
	}
	return img, nil
}

// imageIndex builds an OCI index of images, each descriptor carrying its
// platform so platform selection works from the index alone.
func imageIndex(images []v1.Image, platforms []v1.Platform) v1.ImageIndex {
	adds := make([]mutate.IndexAddendum, len(images))
	for i, img := range images {
		p := platforms[i]
		adds[i] = mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}}
	}
	return mutate.AppendManifests(empty.Index, adds...)
}

// WriteLayout appends a case to the OCI image layout at dir (created when
// absent), tagged tag; multi-arch cases are appended as their index.
func WriteLayout(dir, tag string, c Case) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	ann := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})
	if c.Index != nil {
		return p.AppendIndex(c.Index, ann)
	}
	return p.AppendImage(c.Image, ann)
}
