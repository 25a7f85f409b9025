// Package pveoracle lets tests ask Proxmox VE's own Perl code whether a CT
// config is valid, instead of trusting nexcage's reading of the docs. The
// oracle (pve-container and pve-common, unmodified, with validate-conf.pl)
// lives outside the repository; NEXCAGE_PVE_ORACLE names its folder.
// Without it the tests that need it skip and say so; with it set, a
// missing or broken oracle fails them, so CI cannot pass by skipping.
package pveoracle

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Env names the oracle's folder (the one holding validate-conf.pl).
const Env = "NEXCAGE_PVE_ORACLE"

// Version is one PVE release the oracle holds the pve-container of.
type Version struct {
	PVE string // "9.2"
	// Src is pve-container's src folder inside the oracle.
	Src string
}

// Versions are the PVE releases nexcage's configs are judged against,
// oldest first.
var Versions = []Version{
	{PVE: "9.0", Src: "src/pve-container-6.0.9/src"},
	{PVE: "9.1", Src: "src/pve-container-6.0.18/src"},
	{PVE: "9.2", Src: "src/pve-container/src"},
}

// Latest is the newest PVE release in Versions.
var Latest = Versions[len(Versions)-1]

// Oracle is a usable oracle folder.
type Oracle struct{ dir string }

// Require returns the oracle named by NEXCAGE_PVE_ORACLE, skipping the test
// when the variable is unset and failing it when the folder, perl or the
// oracle's self-check does not work.
func Require(t testing.TB) *Oracle {
	t.Helper()
	dir := os.Getenv(Env)
	if dir == "" {
		t.Skipf("%s is not set: Proxmox's own code cannot judge this output here (make test sets it when ../shared/pve-oracle exists; CI requires it)", Env)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := &Oracle{dir: abs}
	if _, err := os.Stat(o.script()); err != nil {
		t.Fatalf("%s=%s: no validate-conf.pl there: %v", Env, dir, err)
	}
	if _, err := exec.LookPath("perl"); err != nil {
		t.Fatalf("%s is set but perl is missing: %v (scripts/install-deps.sh installs it)", Env, err)
	}
	// The control file must be rejected: a broken oracle (a missing Perl
	// module, say) that rejects nothing would make every check pass.
	out, ok := o.run(t, Latest, filepath.Join(o.dir, "controls", "neg.conf"))
	if ok || !strings.Contains(out, "REJECTED:") {
		t.Fatalf("the oracle accepted controls/neg.conf, so it is not working (missing Perl modules? run scripts/install-deps.sh):\n%s", out)
	}
	return o
}

func (o *Oracle) script() string { return filepath.Join(o.dir, "validate-conf.pl") }

// run runs validate-conf.pl on args for version v and reports its output
// and whether it accepted everything (exit 0). An exit status other than
// 0 or 1 (usage, a Perl error) fails the test.
func (o *Oracle) run(t testing.TB, v Version, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command("perl", append([]string{o.script(), "--quiet"}, args...)...)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), "PVE_CONTAINER_SRC="+filepath.Join(o.dir, v.Src))
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), true
	}
	if ee, isExit := err.(*exec.ExitError); isExit && ee.ExitCode() == 1 {
		return string(out), false
	}
	t.Fatalf("validate-conf.pl for PVE %s: %v\n%s", v.PVE, err, out)
	return "", false
}

// CheckConf fails the test, quoting PVE's own messages, if PVE version v
// rejects anything in the CT config files.
func (o *Oracle) CheckConf(t testing.TB, v Version, files ...string) {
	t.Helper()
	if out, ok := o.run(t, v, files...); !ok {
		t.Errorf("PVE %s (pve-container in %s) rejects %s:\n%s", v.PVE, v.Src, strings.Join(files, ", "), out)
	}
}

// Rejects reports whether PVE version v rejects something in the files,
// with the oracle's output.
func (o *Oracle) Rejects(t testing.TB, v Version, files ...string) (bool, string) {
	t.Helper()
	out, ok := o.run(t, v, files...)
	return !ok, out
}
