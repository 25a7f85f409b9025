package testbundle

import (
	"archive/tar"
	"fmt"
	"io"
	"testing"

	nctemplate "github.com/nexcage/nexcage/template"
)

// Members lists a template's tar headers in archive order, decompressed
// as template.OpenTar tells the compression from the content.
func Members(t testing.TB, template string) []*tar.Header {
	t.Helper()
	r, _, err := nctemplate.OpenTar(template)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	var out []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}

// Describe is one member's metadata on one line, for comparing templates.
func Describe(h *tar.Header) string {
	return fmt.Sprintf("%s type=%c mode=%o %d:%d size=%d mtime=%d link=%q pax=%v", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Size, h.ModTime.UnixNano(), h.Linkname, h.PAXRecords)
}

// DiffMembers reports where two templates that should be equal differ:
// the first members whose metadata differ, or that only content bytes do.
func DiffMembers(t *testing.T, want, got string) {
	t.Helper()
	a, b := Members(t, want), Members(t, got)
	shown := 0
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y string
		if i < len(a) {
			x = Describe(a[i])
		}
		if i < len(b) {
			y = Describe(b[i])
		}
		if x != y {
			t.Errorf("member %d:\n  want %s\n  got  %s", i, x, y)
			if shown++; shown > 8 {
				break
			}
		}
	}
	if shown == 0 {
		t.Error("templates differ in content bytes")
	}
}
