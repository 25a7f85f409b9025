package convert_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

// digestsFile pins the exact bytes the streaming build writes for every
// corpus image. Refactors must not move a byte (issue #18); a change that
// is meant to change the format updates it with -update and says why.
const digestsFile = "testdata/template-digests.txt"

func TestTemplateBytesArePinned(t *testing.T) {
	testenv.CheckLeaks(t)
	var got strings.Builder
	for _, c := range cases(t) {
		s, img := storeCase(t, c)
		for _, comp := range []string{"zstd", "gzip", "xz"} {
			opts := convert.Options{Privileged: true, ToolVersion: "test", Output: t.TempDir() + "/"}
			var err error
			if opts.Compression, err = template.ParseCompression(comp); err != nil {
				t.Fatal(err)
			}
			f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{PrecompressLevel: convert.PrecompressLevel(opts)})
			if err != nil {
				t.Fatal(err)
			}
			res, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
			f.Close()
			if err != nil {
				t.Fatalf("%s %s: %v", c.Name, comp, err)
			}
			fmt.Fprintf(&got, "%s %s %s template=%x conf=%x json=%x\n", c.Name, comp, filepath.Base(res.Template),
				sha256.Sum256(readFile(t, res.Template)), sha256.Sum256([]byte(normalise(string(readFile(t, res.Config))))),
				sha256.Sum256([]byte(normalise(string(readFile(t, res.SidecarJSON))))))
		}
	}
	if *update {
		if err := os.WriteFile(digestsFile, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(digestsFile)
	if err != nil {
		t.Fatalf("%v (go test ./convert -run TestTemplateBytesArePinned -update writes it)", err)
	}
	if got.String() != string(want) {
		gl, wl := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("template bytes moved:\n got %s\nwant %s", g, w)
			}
		}
	}
}
