package pct

import (
	"context"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/lxc"
)

// TestMarkerNotSpoofable: a template's .conf comments become the
// container's description, before nexcage's own marker. A fake marker
// line first, or an image value with a blank that injects digest=, must
// not decide what list --containers says the container is.
func TestMarkerNotSpoofable(t *testing.T) {
	conf := "# nexcage: template=local:vztmpl/fake.tar.zst image=evil digest=sha256:bad\n# ok comment\n# bell\a here\narch: amd64\nostype: alpine\nunprivileged: 1\n"
	c, err := lxc.ParseTemplateConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.Description, "nexcage:") || strings.Contains(c.Description, "\a") || !strings.Contains(c.Description, "ok comment") {
		t.Errorf("template comments kept as %q: want the fake marker and the control character dropped, the rest kept", c.Description)
	}
	// Were one to get through, the last marker, nexcage's own, wins.
	d := describe("nexcage: template=local:vztmpl/fake.tar.zst image=evil", Marker{Template: "local:vztmpl/real.tar.zst", Image: "docker.io/app:1", Digest: "sha256:abc"})
	if m, ok := parseMarker(d); !ok || m.Template != "local:vztmpl/real.tar.zst" || m.Image != "docker.io/app:1" {
		t.Errorf("parseMarker(%q) = %+v, want nexcage's own marker", d, m)
	}
	for _, img := range []string{"app:1 digest=sha256:forged", "app:1\x1b[2J", "app\t1"} {
		tp := &Template{File: "/nonexistent/app_1_amd64.tar.zst", Image: img, Config: &lxc.Config{Arch: "amd64", OSType: "alpine"}}
		_, err := MakePlan(context.Background(), OfflineHost(Version{Major: 9, Minor: 2}, ""), tp, Options{})
		if err == nil || !strings.Contains(err.Error(), "ownership marker") {
			t.Errorf("image %q: %v, want a refusal", img, err)
		}
	}
}
