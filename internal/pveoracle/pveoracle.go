// Package pveoracle lets tests ask Proxmox VE's own Perl code whether a CT
// config is valid, instead of trusting nexcage's reading of the docs. The
// oracle (pve-container and pve-common, unmodified, with validate-conf.pl)
// lives outside the repository; NEXCAGE_PVE_ORACLE names its folder.
// Without it the tests that need it skip and say so; with it set, a
// missing or broken oracle fails them, so CI cannot pass by skipping.
package pveoracle

import (
	"encoding/json"
	"fmt"
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
		t.Skipf("%s is not set: Proxmox's own code cannot judge this output here (CI's .ci/run sets it; set %s=DIR to run these)", Env, Env)
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

// perl is a perl command run in the oracle's folder with version v's
// pve-container.
func (o *Oracle) perl(v Version, args ...string) *exec.Cmd {
	cmd := exec.Command("perl", args...)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), "PVE_CONTAINER_SRC="+filepath.Join(o.dir, v.Src))
	return cmd
}

// run runs validate-conf.pl on args for version v and reports its output
// and whether it accepted everything (exit 0). An exit status other than
// 0 or 1 (usage, a Perl error) fails the test.
func (o *Oracle) run(t testing.TB, v Version, args ...string) (string, bool) {
	t.Helper()
	out, err := o.perl(v, append([]string{o.script(), "--quiet"}, args...)...).CombinedOutput()
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

// Verdict is what PVE says of one config line.
type Verdict struct {
	Line     string
	Accepted bool
	Output   string // PVE's messages (REJECTED: ...) when refused
}

// LineVerdicts has PVE version v judge each line on its own, as the only
// line of a CT config: one file per line, all in one run of the oracle.
func (o *Oracle) LineVerdicts(t testing.TB, v Version, lines []string) []Verdict {
	t.Helper()
	dir := t.TempDir()
	files := make([]string, len(lines))
	for i, l := range lines {
		files[i] = filepath.Join(dir, fmt.Sprintf("%04d.conf", i))
		if err := os.WriteFile(files[i], []byte(l+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := o.run(t, v, files...)
	// Each file's messages follow its "== FILE" header.
	sections := map[string]string{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(l, "== "); ok {
			cur = h
			continue
		}
		if cur != "" && strings.Contains(l, "REJECTED:") {
			sections[cur] += strings.TrimSpace(l) + "\n"
		}
	}
	res := make([]Verdict, len(lines))
	for i, l := range lines {
		msg := sections[files[i]]
		res[i] = Verdict{Line: l, Accepted: msg == "", Output: msg}
	}
	return res
}

// pctArgv turns a pvesh call of deploy's into the pct call that reaches
// the same API method with the same parameters (validate-conf.pl only
// runs pct's CLI layer); pct argvs are returned as they are.
func pctArgv(argv []string) ([]string, error) {
	// --password= has pct read the password from its standard input,
	// which the oracle does not have: the option is left out.
	var kept []string
	for _, a := range argv {
		if a != "--password=" {
			kept = append(kept, a)
		}
	}
	argv = kept
	if len(argv) < 3 || argv[0] != "pvesh" {
		return argv, nil
	}
	path := strings.Split(strings.Trim(argv[2], "/"), "/")
	rest := argv[3:]
	take := func(opt string) (string, bool) {
		for i := 0; i+1 < len(rest); i++ {
			if rest[i] == "--"+opt {
				v := rest[i+1]
				rest = append(append([]string(nil), rest[:i]...), rest[i+2:]...)
				return v, true
			}
		}
		return "", false
	}
	switch {
	case argv[1] == "create" && len(path) == 3 && path[0] == "nodes" && path[2] == "lxc":
		vmid, ok1 := take("vmid")
		tmpl, ok2 := take("ostemplate")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("pvesh create /nodes/N/lxc without --vmid or --ostemplate")
		}
		return append([]string{"pct", "create", vmid, tmpl}, rest...), nil
	case argv[1] == "set" && len(path) == 5 && path[2] == "lxc" && path[4] == "config":
		return append([]string{"pct", "set", path[3]}, rest...), nil
	case argv[1] == "create" && len(path) == 6 && path[4] == "status" && path[5] == "start":
		return append([]string{"pct", "start", path[3]}, rest...), nil
	case argv[1] == "delete" && len(path) == 4 && path[2] == "lxc":
		return append([]string{"pct", "destroy", path[3]}, rest...), nil
	}
	return nil, fmt.Errorf("no pct equivalent known for %s", strings.Join(argv, " "))
}

// CheckArgv fails the test if PVE version v's pct CLI (option parsing,
// the API method's schema, mount point parsing) rejects the argv, or
// keeps only one value of an option given several times. A pvesh argv is
// checked as the pct call reaching the same API method.
func (o *Oracle) CheckArgv(t testing.TB, v Version, argv ...string) {
	t.Helper()
	pa, err := pctArgv(argv)
	if err != nil {
		t.Errorf("PVE %s: %v", v.PVE, err)
		return
	}
	if out, ok := o.run(t, v, append([]string{"--argv"}, pa...)...); !ok {
		t.Errorf("PVE %s (pve-container in %s) rejects %q:\n%s", v.PVE, v.Src, argv, out)
	}
}

// RejectsArgv reports whether PVE version v rejects the argv (or loses a
// repeated option's values), with the oracle's output.
func (o *Oracle) RejectsArgv(t testing.TB, v Version, argv ...string) (bool, string) {
	t.Helper()
	pa, err := pctArgv(argv)
	if err != nil {
		t.Fatal(err)
	}
	out, ok := o.run(t, v, append([]string{"--argv"}, pa...)...)
	return !ok, out
}

// CheckPlan fails the test if PVE version v rejects anything in a
// `deploy --dry-run --json` plan: its pct commands, the raw lines it
// appends, and the resulting config.
func (o *Oracle) CheckPlan(t testing.TB, v Version, planJSON []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(f, planJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, ok := o.run(t, v, "--dry-run", f); !ok {
		t.Errorf("PVE %s (pve-container in %s) rejects the plan:\n%s\nplan: %s", v.PVE, v.Src, out, planJSON)
	}
}

// ByPVE returns the oracle's version for a PVE major.minor, or false.
func ByPVE(pve string) (Version, bool) {
	for _, v := range Versions {
		if v.PVE == pve {
			return v, true
		}
	}
	return Version{}, false
}

// OCIMap runs pve-oci-map.pl: PVE version v's own OCI import
// (archive_is_oci_format and restore_oci_archive, user resolution
// included) on an uncompressed OCI archive, and returns the CT config it
// would write (write_pct_config), for an unprivileged container or not.
func (o *Oracle) OCIMap(t testing.TB, v Version, archive string, unprivileged bool) string {
	t.Helper()
	unpriv := "0"
	if unprivileged {
		unpriv = "1"
	}
	// The import reads the archive inside a user namespace (as the
	// container's root, 100000 when unprivileged): it must be readable
	// there, which a test's 0700 temporary folder is not. The script uses
	// /tmp for its rootfs too.
	dir, err := os.MkdirTemp("/tmp", "pve-oci-map-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	readable := filepath.Join(dir, "image.tar")
	raw, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readable, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("perl", filepath.Join(o.dir, "pve-oci-map.pl"), readable, unpriv)
	cmd.Dir = o.dir
	cmd.Env = append(os.Environ(), "PVE_CONTAINER_SRC="+filepath.Join(o.dir, v.Src))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pve-oci-map.pl for PVE %s on %s: %v\n%s", v.PVE, archive, err, out)
	}
	if !strings.Contains(string(out), "archive_is_oci_format: 1\n") {
		t.Fatalf("PVE %s does not take %s for an OCI archive:\n%s", v.PVE, archive, out)
	}
	const marker = "---- CT config as PVE writes it (write_pct_config):\n"
	_, conf, ok := strings.Cut(string(out), marker)
	if !ok {
		t.Fatalf("pve-oci-map.pl printed no config:\n%s", out)
	}
	return conf
}

// scriptPrelude loads pve-container (PVE_CONTAINER_SRC) and the modules
// it needs from the oracle folder, the script's first argument, as
// validate-conf.pl does.
const scriptPrelude = `
use strict;
use warnings;
BEGIN {
    my $base = shift @ARGV;
    my @src = map { "$base/src/$_/src" }
        qw(pve-common pve-cluster pve-guest-common pve-storage pve-access-control
           pve-firewall pve-ha-manager pve-apiclient pve-network qemu-server);
    unshift @INC, "$base/stubs", $ENV{PVE_CONTAINER_SRC}, @src;
    $SIG{__WARN__} = sub { print STDERR $_[0] if $_[0] !~ /is experimental/ };
}
`

// roundTripScript reads a CT config on stdin with pve-container's own
// parse_pct_config (strict) and prints what its write_pct_config writes
// back: what PVE keeps of a config it reads and saves. Its module path is
// validate-conf.pl's.
const roundTripScript = scriptPrelude + `
use PVE::LXC::Config;
local $/;
my $raw = <STDIN>;
my $conf = PVE::LXC::Config::parse_pct_config("/etc/pve/lxc/100.conf", $raw, 1);
print PVE::LXC::Config::write_pct_config("/etc/pve/lxc/100.conf", $conf);
`

// RoundTrip returns the config PVE version v writes after reading text,
// failing the test if PVE refuses it.
func (o *Oracle) RoundTrip(t testing.TB, v Version, text string) string {
	t.Helper()
	out, err := o.pipe(v, roundTripScript, text)
	if err != nil {
		t.Fatalf("PVE %s does not read and write back this config: %v\n%s", v.PVE, err, text)
	}
	return string(out)
}

// pipe runs a Perl script made with scriptPrelude for version v on text
// (its stdin) and returns its stdout; an error carries its stderr.
func (o *Oracle) pipe(v Version, script, text string) ([]byte, error) {
	cmd := o.perl(v, "-e", script, o.dir)
	cmd.Stdin = strings.NewReader(text)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, stderr.String())
	}
	return out, nil
}

// parseScript prints, as JSON, what pve-container's parse_pct_config
// makes of a CT config on stdin, read as PVE loads /etc/pve/lxc/N.conf
// (not strict: a line it does not know is warned about and dropped).
const parseScript = scriptPrelude + `
use JSON;
use PVE::LXC::Config;
local $/;
my $raw = <STDIN>;
my $conf = PVE::LXC::Config::parse_pct_config("/etc/pve/lxc/100.conf", $raw, 0);
delete $conf->{$_} for qw(digest pending snapshots);
print JSON->new->utf8->canonical->encode($conf);
`

// Parse returns what PVE version v's parse_pct_config reads from a CT
// config's main section, as PVE loads it: the description decoded, env
// (from 9.1) joined from the lxc.environment.runtime lines, lxc the other
// raw keys as [key, value] pairs. Numbers are JSON numbers where PVE's
// check_type made them so.
func (o *Oracle) Parse(t testing.TB, v Version, text string) map[string]any {
	t.Helper()
	out, err := o.pipe(v, parseScript, text)
	if err != nil {
		t.Fatalf("PVE %s cannot read this config: %v\n%s", v.PVE, err, text)
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("PVE %s's parse: %v\n%s", v.PVE, err, out)
	}
	return res
}
