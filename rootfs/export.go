package rootfs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"github.com/opencontainers/go-digest"
	"io"
	"os"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/ctxio"
)

// ExportOCIArchive writes one stored image as the uncompressed OCI archive
// PVE 9.1 imports natively (proxmox.md §5): members oci-layout, index.json
// and blobs/sha256/... without "./", an index whose only entry is the image
// manifest, OCI media types throughout (the store already has them).
// Members are in a fixed order with a fixed mtime, so the archive is
// reproducible.
func (s *Store) ExportOCIArchive(ctx context.Context, img Image, target string, mtime time.Time) (int64, error) {
	m, err := s.ociManifest(img.Digest)
	if err != nil {
		return 0, err
	}
	h, err := v1.NewHash(img.Digest)
	if err != nil {
		return 0, err
	}
	mfi, err := s.blobInfo(digest.Digest(img.Digest))
	if err != nil {
		return 0, err
	}
	plat, _ := ParsePlatform(img.Platform)
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: h, Size: mfi.Size(),
		Platform:    &v1.Platform{OS: plat.OS, Architecture: plat.Architecture, Variant: plat.Variant},
		Annotations: map[string]string{refNameAnnotation: "latest"},
	}}}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return 0, err
	}
	blobs := map[string]bool{img.Digest: true, m.Config.Digest.String(): true}
	for _, l := range m.Layers {
		blobs[l.Digest.String()] = true
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)

	f, err := atomicfile.Create(target, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Abort()
	var written ctxio.Counter
	tw := tar.NewWriter(io.MultiWriter(f, &written))
	file := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}
	}
	dir := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	for _, step := range []struct {
		hdr  *tar.Header
		body []byte
	}{
		{file("oci-layout", int64(len(layout))), layout},
		{file("index.json", int64(len(indexJSON))), indexJSON},
		{dir("blobs/"), nil},
		{dir("blobs/sha256/"), nil},
	} {
		if err := tw.WriteHeader(step.hdr); err != nil {
			return 0, err
		}
		if _, err := tw.Write(step.body); err != nil {
			return 0, err
		}
	}
	for _, d := range digests {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := s.copyBlob(tw, digest.Digest(d), file); err != nil {
			return 0, fmt.Errorf("export %s: blob %s: %w", img.Ref, d, err)
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	return written.N, f.Commit()
}

// blobInfo stats a blob as openBlobFile opens it.
func (s *Store) blobInfo(d digest.Digest) (os.FileInfo, error) {
	f, err := s.openBlobFile(d, -1)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

func (s *Store) copyBlob(tw *tar.Writer, d digest.Digest, file func(string, int64) *tar.Header) error {
	bf, err := s.openBlobFile(d, -1)
	if err != nil {
		return fmt.Errorf("missing from the store: pull the image again (%w)", err)
	}
	name := "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
	defer bf.Close()
	fi, err := bf.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(file(name, fi.Size())); err != nil {
		return err
	}
	_, err = io.Copy(tw, bf)
	return err
}
