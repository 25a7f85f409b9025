package lxc

import (
	"errors"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// TestForRefusesEveryEnvBeforePVE91: before pve-container 6.0.18 an
// environment could only be plain lxc.environment, which LXC also gives
// the hooks PVE runs as root on the host. A deny-list of dangerous names
// misses some (PATH, HOME, TMPDIR...), so no image variable goes there;
// DropEnv leaves them all out, naming them.
func TestForRefusesEveryEnvBeforePVE91(t *testing.T) {
	for _, e := range []string{"PATH=/var/lib/lxc/100/rootfs/usr/bin:/usr/bin", "HOME=/x", "TMPDIR=/x", "IFS=/", "GREETING=hi"} {
		c := Config{Entrypoint: "/app", Env: []string{e}}
		_, err := c.For(PVE90, false)
		var ee *EnvReleaseError
		name, _, _ := strings.Cut(e, "=")
		if !errors.As(err, &ee) || len(ee.Names) != 1 || ee.Names[0] != name || !strings.Contains(err.Error(), "6.0.18 (PVE 9.1)") {
			t.Errorf("%s on PVE 9.0: %v, want an EnvReleaseError naming it and PVE 9.1", name, err)
		}
		d, names := c.DropEnv()
		out, err := d.For(PVE90, false)
		if err != nil || len(names) != 1 || names[0] != name || strings.Contains(out.Render(), "environment") {
			t.Errorf("DropEnv: %v %q\n%s", err, names, out.Render())
		}
		if out, err := c.For(PVE91, false); err != nil || !strings.Contains(out.Render(), "lxc.environment.runtime: "+e+"\n") {
			t.Errorf("PVE 9.1 keeps %s as lxc.environment.runtime: %v", name, err)
		}
	}
	// Nothing writes plain lxc.environment, on any release.
	c := Config{Raw: []Option{{"lxc.environment", "APP.MODE=x"}}}
	if _, err := c.For(PVE92, false); err == nil {
		t.Error("plain lxc.environment passed For on PVE 9.2")
	}
}

// TestEnvNamePVERefuses: PVE's env pattern refuses APP.MODE and my-var in
// lxc.environment.runtime (the oracle's 6.0.18+ validate-conf.pl
// REJECTs them), and plain lxc.environment would reach the host's hooks:
// FromSpec and the template allow-list refuse them, naming the variable.
func TestEnvNamePVERefuses(t *testing.T) {
	for _, name := range []string{"APP.MODE", "my-var"} {
		_, err := FromSpec(&rspec.Spec{Process: &rspec.Process{Args: []string{"/app"}, Env: []string{"OK=1", name + "=x"}}}, false)
		var ee *EnvError
		if !errors.As(err, &ee) || ee.Index != 1 || ee.Name != name || !strings.Contains(err.Error(), "hooks") {
			t.Errorf("FromSpec %s: %v, want an EnvError naming it", name, err)
		}
		for _, line := range []string{"lxc.environment: " + name + "=x", "lxc.environment.runtime: " + name + "=x"} {
			if _, err := ParseTemplateConfig("arch: amd64\n" + line + "\n"); err == nil {
				t.Errorf("ParseTemplateConfig accepted %q", line)
			}
		}
	}
}
