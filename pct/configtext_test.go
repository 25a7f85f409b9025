package pct

import (
	"strings"
	"testing"

	"github.com/nexcage/nexcage/lxc"
)

// TestConfigText: GET .../config rendered as PVE's config file (the
// description as "#" lines encode_text'ed, env as lxc.environment.runtime lines, the raw
// lxc pairs), and a hostile API answer that would add lines refused.
func TestConfigText(t *testing.T) {
	got, err := configText(map[string]string{
		"description": "hello\nnexcage: template=local:vztmpl/a.tar.zst\n",
		"hostname":    "app",
		"digest":      "abc",
		"env":         "A=1\x00B=two words",
		"lxc":         `[["lxc.init.cwd","/srv"]]`,
		"rootfs":      "local-lvm:vm-100-disk-0,size=8G",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "#hello\n#nexcage%3A template=local%3Avztmpl/a.tar.zst\nhostname: app\nrootfs: local-lvm:vm-100-disk-0,size=8G\n" +
		"lxc.environment.runtime: A=1\nlxc.environment.runtime: B=two words\nlxc.init.cwd: /srv\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for name, conf := range map[string]map[string]string{
		"value with a newline": {"hostname": "app\nlxc.hook.pre-start: /x"},
		"env with a newline":   {"env": "A=1\nlxc.hook.pre-start: /x"},
		"key that is no key":   {"lxc.hook.pre-start: /x\nhostname": "a"},
		"raw key not lxc.":     {"lxc": `[["hostname","x"]]`},
		"raw value with a CR":  {"lxc": `[["lxc.init.cwd","/srv\rlxc.hook.mount: /x"]]`},
		"raw entry of 3":       {"lxc": `[["lxc.init.cwd","/srv","x"]]`},
		"raw that is no list":  {"lxc": `"lxc.init.cwd: /srv"`},
		"uppercase key":        {"Hostname": "a"},
	} {
		if s, err := configText(conf); err == nil {
			t.Errorf("%s: rendered %q, want an error", name, s)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: the error %q has a line break", name, err)
		}
	}
}

// TestConfigTextDescriptionReadsBack: the API's description is decoded;
// rendered as the file it must be encoded as PVE writes it, so that a
// '%41' or ':' in it reads back unchanged (before, "%41" came back as
// "A") and the marker beside it is still read. (A marker's own values
// hold no '%': TestMarkerFieldsHostile.)
func TestConfigTextDescriptionReadsBack(t *testing.T) {
	m := Marker{Template: "local:vztmpl/app_1.tar.zst", Image: "docker.io/x:1", Digest: "sha256:" + strings.Repeat("ab", 32)}
	desc := "100% mine: %41\u00e9\t\n" + m.line() + "\n"
	text, err := configText(map[string]string{"description": desc, "hostname": "app"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, "#100%25 mine%3A %2541%C3%A9%09\n#nexcage%3A template=local%3Avztmpl/app_1.tar.zst image=docker.io/x%3A1 digest=sha256%3A") {
		t.Errorf("the description is not encoded as PVE writes it:\n%s", text)
	}
	c, err := lxc.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := parseMarker(c.Description); !ok || got != m {
		t.Errorf("marker read back as %+v, %v; want %+v", got, ok, m)
	}
	var back []string
	for _, l := range strings.Split(c.Description, "\n") {
		back = append(back, lxc.DecodeText(l))
	}
	if got := strings.Join(back, "\n") + "\n"; got != desc {
		t.Errorf("description read back as %q, want %q", got, desc)
	}
}
