package pct

import (
	"strings"
	"testing"
)

// TestConfigText: GET .../config rendered as PVE's config file (the
// description as "#" lines, env as lxc.environment.runtime lines, the raw
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
	want := "#hello\n#nexcage: template=local:vztmpl/a.tar.zst\nhostname: app\nrootfs: local-lvm:vm-100-disk-0,size=8G\n" +
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
