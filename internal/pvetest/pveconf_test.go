package pvetest_test

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
)

// pveVersions are the stand-in's PVE_VERSION for each release the oracle
// holds.
var pveVersions = map[string]string{"9.0": "9.0.5", "9.1": "9.1.2", "9.2": "9.2.0"}

// TestStandInConfigAgreesWithPVE has PVE's own parse_pct_config and
// write_pct_config judge the stand-in's config file and its API and pct
// config answers, on every release: a description goes into the file
// encode_text'ed ('%', ':', control and non-ASCII bytes as %XX) and comes
// out of the API decoded, and out of `pct config` encoded on one line;
// lxc.environment.runtime lines are the API's env key from 9.1 and gone
// on 9.0, whose parser drops them. Before, the stand-in wrote and read
// descriptions raw and returned the environment in lxc.
func TestStandInConfigAgreesWithPVE(t *testing.T) {
	o := pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	const base = "arch: amd64\nhostname: d\nostype: alpine\nrootfs: local-lvm:vm-100-disk-0,size=1G\n"
	descs := []string{
		"nexcage: template=local:vztmpl/a.tar.zst image=docker.io/x:1",
		"100% done, %41 stays %41, %zz and %",
		"one\n\nthree\n\n",
		"\nafter a blank line",
		"héllo ✓ 日本",
		"ctl\x01 esc\x1b[31m del\x7f tab\there\rcr",
		"description: looks like a key\n#a hash",
	}
	files := []string{
		base + "#x%3Ay\n#100%\n#%C3%A9\n",
		"description: old%3Astyle\n" + base,
		"#d\n" + base + "lxc.cap.drop: sys_time\nlxc.environment.runtime: A=1\nlxc.environment.runtime: B=two words\n",
		base + "lxc.environment.runtime: ONLY=1\n",
	}
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(s.ConfigPath("pve", 100), []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for _, ov := range pveoracle.Versions {
		env := append(slices.Clone(s.Env), "PVE_VERSION="+pveVersions[ov.PVE])
		run := func(name string, args ...string) string {
			t.Helper()
			cmd := s.Command(context.Background(), name, args...)
			cmd.Env = env
			out, errOut, code := testenv.Output(t, cmd)
			if code != 0 {
				t.Fatalf("PVE %s: %s %s: exit %d: %s", ov.PVE, name, strings.Join(args, " "), code, errOut)
			}
			return out
		}
		// agree checks the stand-in's answers for the config in the file
		// against PVE's reading of it.
		agree := func(what, file string) {
			t.Helper()
			want := o.Parse(t, ov, file)
			var got map[string]any
			if err := json.Unmarshal([]byte(run("pvesh", "get", "/nodes/pve/lxc/100/config", "--output-format", "json")), &got); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"description", "env", "lxc"} {
				if !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("PVE %s, %s: the API's %s is %#v, PVE's %#v\nfile:\n%s", ov.PVE, what, k, got[k], want[k], file)
				}
			}
			conf := run("pct", "config", "100")
			if d, ok := want["description"].(string); ok && !hasLine(conf, "description: "+lxc.EncodeText(d)) {
				t.Errorf("PVE %s, %s: pct config lacks the description %q encoded:\n%s", ov.PVE, what, d, conf)
			}
			if e, ok := want["env"].(string); ok && !hasLine(conf, "env: "+e) {
				t.Errorf("PVE %s, %s: pct config lacks env %q:\n%s", ov.PVE, what, e, conf)
			}
			if strings.HasPrefix(conf, "#") || strings.Contains(conf, "\n#") || strings.Contains(conf, "lxc.environment") {
				t.Errorf("PVE %s, %s: pct config prints the file's lines, not PVE's:\n%s", ov.PVE, what, conf)
			}
		}
		for _, d := range descs {
			write(base)
			run("pct", "set", "100", "--description", d)
			file := readConfig(t, s, "pve", 100)
			// PVE reads and writes back exactly what the stand-in wrote:
			// a raw ':', '%' or control byte would come back encoded.
			if got := o.RoundTrip(t, ov, file); got != file {
				t.Errorf("PVE %s, description %q: the stand-in wrote\n%s\nPVE writes\n%s", ov.PVE, d, file, got)
			}
			wantDesc := ""
			for _, l := range strings.Split(strings.TrimRight(d, "\n"), "\n") {
				wantDesc += l + "\n"
			}
			if got, _ := o.Parse(t, ov, file)["description"].(string); got != wantDesc {
				t.Errorf("PVE %s reads the description set as %q as %q, want %q", ov.PVE, d, got, wantDesc)
			}
			agree("description "+strings.ReplaceAll(d, "\n", `\n`), file)
		}
		for i, f := range files {
			write(f)
			agree("file "+string(rune('a'+i)), f)
		}
	}
}
