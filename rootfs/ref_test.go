package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	wd, _ := os.Getwd()
	abs := func(p string) string { return filepath.Join(wd, p) }
	for _, tc := range []struct {
		in        string
		transport Transport
		name, tag string
		canonical string
	}{
		{"alpine", TransportDocker, "index.docker.io/library/alpine:latest", "", "docker://index.docker.io/library/alpine:latest"},
		{"alpine:3.20", TransportDocker, "index.docker.io/library/alpine:3.20", "", ""},
		{"docker://alpine:3.20", TransportDocker, "index.docker.io/library/alpine:3.20", "", ""},
		{"localhost:5000/app:1", TransportDocker, "localhost:5000/app:1", "", "docker://localhost:5000/app:1"},
		{"127.0.0.1:5000/team/app@sha256:" + strings.Repeat("a", 64), TransportDocker, "127.0.0.1:5000/team/app@sha256:" + strings.Repeat("a", 64), "", ""},
		{"oci:layout", TransportOCI, abs("layout"), "", ""},
		{"oci:/srv/layout:v1", TransportOCI, "/srv/layout", "v1", "oci:/srv/layout:v1"},
		{"oci-archive:img.tar:latest", TransportOCIArchive, abs("img.tar"), "latest", ""},
		{"docker-archive:/tmp/a.tar", TransportDockerArchive, "/tmp/a.tar", "", ""},
		{"docker-archive:/tmp/a.tar:alpine:3.20", TransportDockerArchive, "/tmp/a.tar", "alpine:3.20", ""},
		{"docker-archive:/tmp/a.tar:localhost:5000/app", TransportDockerArchive, "/tmp/a.tar", "localhost:5000/app", ""},
		{"docker-archive:/tmp/img:alpine:3.20", TransportDockerArchive, "/tmp/img", "alpine:3.20", ""},
	} {
		r, err := ParseRef(tc.in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", tc.in, err)
			continue
		}
		if r.Transport != tc.transport || r.Name != tc.name || r.Tag != tc.tag {
			t.Errorf("ParseRef(%q) = %+v, want %s %s %s", tc.in, r, tc.transport, tc.name, tc.tag)
		}
		if tc.canonical != "" && r.String() != tc.canonical {
			t.Errorf("ParseRef(%q).String() = %q, want %q", tc.in, r.String(), tc.canonical)
		}
		// The canonical form parses back to the same reference: the store
		// keys images by it.
		if back, err := ParseRef(r.String()); err != nil || back != r {
			t.Errorf("round trip of %q: %+v, %v", r.String(), back, err)
		}
	}
}

func TestParseRefErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty image reference"},
		{"docker:alpine", "docker://"},
		{"docker://", "names no image"},
		{"oci:", "names no path"},
		{"oci:dir:", "empty tag"},
		{"UPPER/Case", "not a valid registry reference"},
	} {
		_, err := ParseRef(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRef(%q) error = %v, want it to mention %q", tc.in, err, tc.want)
		}
	}
}

func TestPlatform(t *testing.T) {
	p, err := ParsePlatform("linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Matches(Platform{"linux", "arm64", "v8"}) || p.Matches(Platform{"linux", "amd64", ""}) {
		t.Error("linux/arm64 should match arm64/v8 only")
	}
	v8, _ := ParsePlatform("linux/arm64/v8")
	if !v8.Matches(Platform{"linux", "arm64", ""}) {
		t.Error("arm64/v8 should match an arm64 image that names no variant")
	}
	for _, bad := range []string{"amd64", "linux/", "windows/amd64", "linux/arm/"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) succeeded", bad)
		}
	}
}

// The name an OCI index records for an image: containerd's annotation,
// or a ref.name that is a whole name; a bare tag or junk is no name.
func TestRecordedName(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{"org.opencontainers.image.ref.name": "localhost/rw-highid:oci"}, "localhost/rw-highid:oci"},
		{map[string]string{"org.opencontainers.image.ref.name": "3.20", "io.containerd.image.name": "docker.io/library/alpine:3.20"}, "docker.io/library/alpine:3.20"},
		{map[string]string{"org.opencontainers.image.ref.name": "v2"}, ""},
		{map[string]string{"org.opencontainers.image.ref.name": "../../etc:x y"}, ""},
		{map[string]string{"io.containerd.image.name": "UPPER/Case:1"}, ""},
		{nil, ""},
	} {
		if got := recordedName(tc.ann); got != tc.want {
			t.Errorf("recordedName(%v) = %q, want %q", tc.ann, got, tc.want)
		}
	}
}
