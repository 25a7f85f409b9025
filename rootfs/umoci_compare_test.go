package rootfs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// TestUnpackMatchesUmociCLI proves that `nexcage unpack` writes the same
// rootfs as Debian's `umoci unpack`, entry by entry (type, mode, owner,
// size, content, link target, device numbers, xattrs, hard link groups),
// for every gzip image of the corpus. Docker-format and multi-arch cases are
// compared through the OCI manifest nexcage stored, since umoci reads only
// OCI media types and single manifests.
func TestUnpackMatchesUmociCLI(t *testing.T) {
	testenv.RequireRoot(t)
	umoci := testenv.RequireTool(t, "umoci")
	s := newStore(t)
	arm, err := testimage.Alpine("arm64")
	if err != nil {
		t.Fatal(err)
	}
	cases := append(allCases(t), testimage.Case{Name: "alpine-arm64", Image: arm, Compression: testimage.Gzip})
	for _, c := range cases {
		if c.Compression != testimage.Gzip && c.Compression != testimage.DockerGzip {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			img := pullCase(t, s, c)
			work := t.TempDir()
			ours, err := s.Unpack(context.Background(), img, filepath.Join(work, "nexcage"), UnpackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			umociLayout := layoutForUmoci(t, s, img, filepath.Join(work, "layout"))
			theirs := filepath.Join(work, "umoci")
			testenv.Run(t, umoci, "unpack", "--image", umociLayout+":t", theirs)

			want, err := fstree.Snapshot(filepath.Join(theirs, "rootfs"), fstree.Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := fstree.Snapshot(ours.Rootfs, fstree.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(want) < 2 {
				t.Fatalf("umoci unpacked only %d entries: the comparison would prove nothing", len(want))
			}
			for _, d := range fstree.Diff(want, got) {
				t.Error(d)
			}
		})
	}
}

// layoutForUmoci makes a layout whose only tag "t" is the stored image:
// the store's own tags are full references, which umoci's --image syntax
// cannot address. The blobs are the store's, by symlink.
func layoutForUmoci(t testing.TB, s *Store, img Image, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(s.Dir, "blobs"), filepath.Join(dir, "blobs")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	h, _ := v1.NewHash(img.Digest)
	fi, err := os.Stat(s.BlobPath(h))
	if err != nil {
		t.Fatal(err)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: h, Size: fi.Size(),
		Annotations: map[string]string{refNameAnnotation: "t"},
	}}}
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
