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

// TestMarkerFieldsHostile: markers are read percent-decoded, from a
// description anyone allowed to edit the CT writes. A marker whose
// decoded values hold a control character (ESC, BEL: terminal escapes
// when list --containers prints it) or fall outside their grammar is not
// a marker; and nexcage refuses to write a value holding '%' (a template
// named x%20image=... would read back with an injected image=), or
// anything else outside the grammar.
func TestMarkerFieldsHostile(t *testing.T) {
	for _, d := range []string{
		"nexcage%3A template=local%3Avztmpl/x%1B]0;owned%07.tar.zst",
		"nexcage: template=local:vztmpl/x.tar.zst image=a\u009b2J",
		"nexcage: template=local:vztmpl/x.tar.zst digest=sha256:%25",
		"nexcage: template=local:vztmpl/x\u202e.tar.zst",
		"nexcage: template=/etc/passwd",
	} {
		if m, ok := parseMarker(d); ok {
			t.Errorf("parseMarker(%q) = %+v, want no marker", d, m)
		}
	}
	// The last valid marker is still found before a hostile one.
	if m, ok := parseMarker("nexcage: template=local:vztmpl/a.tar.zst\nnexcage%3A template=x%07"); !ok || m.Template != "local:vztmpl/a.tar.zst" {
		t.Errorf("the valid marker before a hostile line: %+v %v", m, ok)
	}
	for field, v := range map[string]string{"template": "local:vztmpl/x%20image=evil.example%2Fimg.tar.zst", "image reference": "app%3A1", "digest": "sha256:ab cd"} {
		if markerValueOK(field, v) {
			t.Errorf("markerValueOK(%s, %q) = true", field, v)
		}
	}
	for field, v := range map[string]string{"template": "local:vztmpl/app_1-ab12cd34ef56_amd64.tar.zst", "image reference": "registry.example:5000/ns/app@sha256:0123", "digest": "sha256:0123abcdef"} {
		if !markerValueOK(field, v) {
			t.Errorf("markerValueOK(%s, %q) = false", field, v)
		}
	}
	tp := &Template{File: "/nonexistent/x%20image=evil.example%2Fimg.tar.zst", Config: &lxc.Config{Arch: "amd64", OSType: "alpine"}}
	if _, err := MakePlan(context.Background(), OfflineHost(Version{Major: 9, Minor: 2}, ""), tp, Options{}); err == nil || !strings.Contains(err.Error(), "ownership marker") {
		t.Errorf("a template named with %%20image=: %v, want a refusal", err)
	}
}
