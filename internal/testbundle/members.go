package testbundle

import (
	"archive/tar"
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
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
	var out []*tar.Header
	for h := range testenv.TarMembers(t, r) {
		out = append(out, h)
	}
	return out
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

// Member is one tar entry of a hand-made template: its header (ModTime
// and Format are set by Tar) and the body of a regular file.
type Member struct {
	Hdr  tar.Header
	Body string
}

// DirM is a 0755 directory member.
func DirM(name string) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// FileM is a 0644 regular file member holding body.
func FileM(name, body string) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, Body: body}
}

// SymlinkM is a symlink member to target.
func SymlinkM(name, target string) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// HardlinkM is a hard link member to target.
func HardlinkM(name, target string) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// Tar is members as an uncompressed PAX archive, in the order given, all
// with one fixed mtime so that the bytes do not depend on when a test runs.
func Tar(t testing.TB, ms ...Member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := m.Hdr
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m.Body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
