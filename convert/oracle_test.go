package convert_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
)

// TestCorpusConfsPassPVE converts every corpus image and has Proxmox's own
// config parser and API schema judge each .conf convert writes.
func TestCorpusConfsPassPVE(t *testing.T) {
	testenv.RequireRoot(t) // the corpus holds owners and devices only root can unpack
	o := pveoracle.Require(t)
	var confs []string
	for _, c := range cases(t) {
		res, err := convert.Convert(t.Context(), unpack(t, c, false), convert.Options{Output: t.TempDir() + "/", SquashHighIDs: true})
		if err != nil {
			t.Logf("%s: not convertible (%v); the corpus tests cover why", c.Name, err)
			continue
		}
		confs = append(confs, res.Config)
	}
	if len(confs) == 0 {
		t.Fatal("no corpus image converted")
	}
	// A template's .conf is written for the newest PVE and judged as it
	// is; for an older one, deploy translates it (lxc.Config.For): the
	// translation is what that PVE must accept.
	o.CheckConf(t, pveoracle.Latest, confs...)
	for _, v := range pveoracle.Versions[:len(pveoracle.Versions)-1] {
		var translated []string
		for _, f := range confs {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, err := lxc.Parse(string(raw))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			// Before PVE 9.1 the environment could only be plain
			// lxc.environment, which reaches the host's hooks: For
			// refuses it, and deploy --drop-env leaves it out.
			if !releases[v.PVE].AppContainers() && len(c.Env) > 0 {
				var ee *lxc.EnvReleaseError
				if _, err := c.For(releases[v.PVE], true); !errors.As(err, &ee) {
					t.Errorf("%s for PVE %s: %v, want an EnvReleaseError", filepath.Base(f), v.PVE, err)
				}
				dropped, _ := c.DropEnv()
				c = &dropped
			}
			// RunAsRoot: before PVE 9.2 deploy refuses lxc.init.uid
			// unless asked to run as root (pct TestDeployRefusesUserBeforePVE92).
			tc, err := c.For(releases[v.PVE], true)
			if err != nil {
				t.Errorf("%s for PVE %s: %v", filepath.Base(f), v.PVE, err)
				continue
			}
			out := filepath.Join(t.TempDir(), filepath.Base(f))
			if err := os.WriteFile(out, []byte(tc.Render()), 0o644); err != nil {
				t.Fatal(err)
			}
			translated = append(translated, out)
		}
		o.CheckConf(t, v, translated...)
	}
	t.Logf("PVE %s accepts the .conf of %d corpus images (%s ...), and each older PVE deploy's translation of it", pveoracle.Latest.PVE, len(confs), filepath.Base(confs[0]))
}

var releases = map[string]lxc.PVEContainer{"9.0": lxc.PVE90, "9.1": lxc.PVE91, "9.2": lxc.PVE92}
