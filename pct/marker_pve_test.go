package pct

import (
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/lxc"
)

var (
	// pveMarked is a config nexcage created as PVE's write_pct_config
	// writes it: the description percent-encoded (encode_text: ':' is %3A).
	pveMarked = "#my app\n#nexcage%3A template=local%3Avztmpl/app.tar.zst image=docker.io/library/nginx%3A1.27 digest=sha256%3Aabc\narch: amd64\nhostname: app\n"
	// nexcageMarked is the same config as nexcage composes it.
	nexcageMarked = "#my app\n#" + pveMarker.line() + "\narch: amd64\nhostname: app\n"
	pveMarker     = Marker{Template: "local:vztmpl/app.tar.zst", Image: "docker.io/library/nginx:1.27", Digest: "sha256:abc"}
)

// TestMarkerReadFromPVEConfigFile: list --containers and upgrade read the
// marker from the config file, where PVE wrote it percent-encoded; it must
// read back as the marker nexcage wrote (before, no container created by
// pct create was found managed).
func TestMarkerReadFromPVEConfigFile(t *testing.T) {
	for _, text := range []string{pveMarked, nexcageMarked} {
		c, err := lxc.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := parseMarker(c.Description); !ok || m != pveMarker {
			t.Errorf("parseMarker(%q) = %+v, %v; want %+v", c.Description, m, ok, pveMarker)
		}
	}
	// A comment a template brings must not become a marker by its encoded
	// form either.
	c, err := lxc.ParseTemplateConfig("#nexcage%3A template=local%3Avztmpl/fake.tar.zst\n#ok\narch: amd64\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseMarker(c.Description); ok || c.Description != "ok" {
		t.Errorf("a template's encoded marker comment kept: description %q", c.Description)
	}
}

// TestPVEEncodesMarker has PVE's own write_pct_config confirm pveMarked:
// what it writes for the description nexcage passes to pct create.
func TestPVEEncodesMarker(t *testing.T) {
	o := pveoracle.Require(t)
	if got := o.RoundTrip(t, pveoracle.Latest, nexcageMarked); got != pveMarked {
		t.Errorf("PVE writes the marked config as\n%s\nnot as\n%s", got, pveMarked)
	}
	// EncodeText writes a description line as PVE does: what PVE reads
	// back from it, it writes again unchanged.
	for _, d := range []string{pveMarker.line(), "50% off: a\x1b[2J\x07b~é\x7f"} {
		conf := "#" + lxc.EncodeText(d) + "\narch: amd64\nhostname: app\n"
		if got := o.RoundTrip(t, pveoracle.Latest, conf); got != conf {
			t.Errorf("EncodeText(%q): PVE writes\n%s\nnot\n%s", d, got, conf)
		}
	}
}
