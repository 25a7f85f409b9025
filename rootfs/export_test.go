package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestExportOCIArchiveIsWhatPVEImports checks proxmox.md §5: members
// oci-layout, index.json and blobs/... without "./", the first index entry
// an OCI image manifest (a Docker source converted), every blob intact,
// and the same bytes every time.
func TestExportOCIArchiveIsWhatPVEImports(t *testing.T) {
	s := newStore(t)
	img := pullCase(t, s, corpusCase(t, "docker-v2s2"))
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, p := range []string{a, b} {
		if _, err := s.ExportOCIArchive(context.Background(), img, p, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := os.ReadFile(a)
	if other, _ := os.ReadFile(b); !bytes.Equal(raw, other) {
		t.Fatal("two exports of one image differ")
	}
	files := map[string][]byte{}
	var names []string
	for h, r := range testenv.TarMembers(t, bytes.NewReader(raw)) {
		names = append(names, h.Name)
		body, _ := io.ReadAll(r)
		files[h.Name] = body
	}
	if names[0] != "oci-layout" || names[1] != "index.json" {
		t.Fatalf("members start %v, want oci-layout, index.json", names[:2])
	}
	for _, n := range names {
		if strings.HasPrefix(n, "./") || !(n == "oci-layout" || n == "index.json" || strings.HasPrefix(n, "blobs/")) {
			t.Errorf("member %q is not one PVE accepts", n)
		}
		if strings.HasPrefix(n, "blobs/sha256/") && len(n) > len("blobs/sha256/") {
			sum := sha256.Sum256(files[n])
			if hex.EncodeToString(sum[:]) != strings.TrimPrefix(n, "blobs/sha256/") {
				t.Errorf("blob %s does not match its name", n)
			}
		}
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].MediaType != types.OCIManifestSchema1 {
		t.Fatalf("index entries %+v, want one OCI image manifest", idx.Manifests)
	}
	var m v1.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+idx.Manifests[0].Digest.Hex], &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s", m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer media type %s, want OCI (the source was Docker v2s2)", l.MediaType)
		}
		if _, ok := files["blobs/sha256/"+l.Digest.Hex]; !ok {
			t.Errorf("layer %s is not in the archive", l.Digest)
		}
	}
}
