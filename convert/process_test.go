package convert_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/template"
)

func readConf(t *testing.T, res *convert.Result) *lxc.Config {
	t.Helper()
	c, err := lxc.Parse(string(readFile(t, res.Config)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func raw(c *lxc.Config, key string) []string {
	var out []string
	for _, o := range c.Raw {
		if o.Key == key {
			out = append(out, o.Value)
		}
	}
	return out
}

// checkPVE has Proxmox's own code judge a .conf, for PVE 9.2 and 9.1.
func checkPVE(t *testing.T, res *convert.Result) {
	t.Helper()
	if os.Getenv(pveoracle.Env) == "" {
		return
	}
	o := pveoracle.Require(t)
	o.CheckConf(t, pveoracle.Latest, res.Config)
	// PVE 9.1 refuses lxc.init.uid/gid in any config (deploy leaves them
	// out there); everything else must pass it too.
	if c := readConf(t, res); raw(c, "lxc.init.uid") == nil && raw(c, "lxc.init.gid") == nil {
		o.CheckConf(t, pveoracle.Versions[1], res.Config)
	}
}

// TestSquashHighIDsMapsTheProcessUser: with --squash-high-ids the process
// user goes to 65534 with its files; without, convert refuses, naming it.
// Before: lxc.init.uid/gid 100000 stayed in an unprivileged config.
func TestSquashHighIDsMapsTheProcessUser(t *testing.T) {
	testenv.RequireRoot(t)
	b := unpack(t, corpusCase(t, "alpine-highid-user"), false)
	res := convertTo(t, b, t.TempDir(), convert.Options{SquashHighIDs: true})
	c := readConf(t, res)
	if !c.Unprivileged || !reflect.DeepEqual(raw(c, "lxc.init.uid"), []string{"65534"}) || !reflect.DeepEqual(raw(c, "lxc.init.gid"), []string{"65534"}) {
		t.Errorf("unprivileged %v, lxc.init.uid %q, gid %q: want 65534 for both", c.Unprivileged, raw(c, "lxc.init.uid"), raw(c, "lxc.init.gid"))
	}
	checkPVE(t, res)

	_, err := convert.Convert(context.Background(), b, convert.Options{Output: t.TempDir() + "/"})
	if !errors.Is(err, convert.ErrHighIDs) {
		t.Errorf("unprivileged without squashing: %v, want ErrHighIDs", err)
	}
	// Files fine, process not: the process alone is named.
	app := unpack(t, corpusCase(t, "alpine-app"), false)
	_, err = convert.Convert(context.Background(), app, convert.Options{Output: t.TempDir() + "/", Process: &template.ProcessOverrides{User: "70000:0"}})
	if !errors.Is(err, convert.ErrHighIDs) || !errors.Is(err, convert.ErrProcessUser) || strings.Contains(err.Error(), "--") || !strings.Contains(err.Error(), "process runs as 70000:0") {
		t.Errorf("process user 70000: %v", err)
	}
	res = convertTo(t, app, t.TempDir(), convert.Options{Privileged: true, Process: &template.ProcessOverrides{User: "70000:0"}})
	if got := raw(readConf(t, res), "lxc.init.uid"); !reflect.DeepEqual(got, []string{"70000"}) {
		t.Errorf("privileged: lxc.init.uid %q, want 70000", got)
	}
}

// TestEnvTrailingBlankRefused: PVE and LXC trim a config line's end, so a
// value ending in a blank is refused naming the variable, and --env fixes
// it. Before: TRAIL=value became TRAIL=value without a word.
func TestEnvTrailingBlankRefused(t *testing.T) {
	img, err := testimage.EnvBlanks()
	if err != nil {
		t.Fatal(err)
	}
	c := testimage.Case{Name: "env-blanks", Image: img, Compression: testimage.Gzip}
	b, err := convert.LoadBundle(testbundle.Unpack(t, c, rootfs.UnpackOptions{Rootless: os.Geteuid() != 0}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = convert.Convert(context.Background(), b, convert.Options{Output: t.TempDir() + "/"})
	var ee *lxc.EnvError
	if !errors.As(err, &ee) || ee.Name != "TRAIL" {
		t.Fatalf("err %v, want an EnvError naming TRAIL", err)
	}
	res := convertTo(t, b, t.TempDir(), convert.Options{Process: &template.ProcessOverrides{Env: []string{"TRAIL=value"}}})
	conf := readConf(t, res)
	for _, want := range []string{"LEAD= x", "INNER=a  b", "TRAIL=value"} {
		if !slices.Contains(conf.Env, want) {
			t.Errorf("env %q lacks %q", conf.Env, want)
		}
	}
	if res.Sidecar.Recipe.Process == nil || !reflect.DeepEqual(res.Sidecar.Recipe.Process.Env, []string{"TRAIL=value"}) {
		t.Errorf("the manifest does not record the override: %+v", res.Sidecar.Recipe)
	}
	checkPVE(t, res)
}

// TestSystemContainerKeepsEnvAndStopSignal: as PVE's own OCI import does.
// Before: the .conf had neither.
func TestSystemContainerKeepsEnvAndStopSignal(t *testing.T) {
	res := convertTo(t, unpack(t, corpusCase(t, "alpine-system"), os.Geteuid() != 0), t.TempDir(), convert.Options{})
	c := readConf(t, res)
	if c.Entrypoint != "" || res.Sidecar.Application {
		t.Errorf("not a system container: entrypoint %q", c.Entrypoint)
	}
	// umoci's TERM=xterm would override PVE's TERM=linux for init.
	if !slices.Contains(c.Env, "container=lxc") || slices.Contains(c.Env, "TERM=xterm") || !reflect.DeepEqual(raw(c, "lxc.signal.halt"), []string{"SIGRTMIN+3"}) {
		t.Errorf("env %q, lxc.signal.halt %q", c.Env, raw(c, "lxc.signal.halt"))
	}
	checkPVE(t, res)
}

// TestOverrides: docker's semantics for --entrypoint and --cmd, and the
// override recorded so the up-to-date check tells builds apart.
func TestOverrides(t *testing.T) {
	b := unpack(t, corpusCase(t, "alpine-app"), os.Geteuid() != 0)
	sl := func(s ...string) *[]string { return &s }
	for _, tc := range []struct {
		ov   template.ProcessOverrides
		want string
	}{
		{template.ProcessOverrides{Entrypoint: sl("/bin/sleep")}, "/bin/sleep"},
		{template.ProcessOverrides{Entrypoint: sl("/bin/sleep"), Cmd: sl("1000")}, "/bin/sleep 1000"},
		{template.ProcessOverrides{Cmd: sl("sleep", "5")}, "/app/run.sh sleep 5"},
		{template.ProcessOverrides{Entrypoint: sl(), Cmd: sl("/bin/sh", "-c", `echo "it's"`)}, `/bin/sh -c 'eval "echo \"it$(printf \\047)s\""'`},
	} {
		res := convertTo(t, b, t.TempDir(), convert.Options{Process: &tc.ov})
		if got := readConf(t, res).Entrypoint; got != tc.want {
			t.Errorf("%+v: entrypoint %q, want %q", tc.ov, got, tc.want)
		}
	}
	res := convertTo(t, b, t.TempDir(), convert.Options{Process: &template.ProcessOverrides{User: "nobody", Workdir: "/tmp", Env: []string{"APP_MODE=prod", "NEW=1"}}})
	c := readConf(t, res)
	if !reflect.DeepEqual(raw(c, "lxc.init.uid"), []string{"65534"}) || !reflect.DeepEqual(raw(c, "lxc.init.cwd"), []string{"/tmp"}) ||
		!slices.Contains(c.Env, "APP_MODE=prod") || slices.Contains(c.Env, "APP_MODE=test") || !slices.Contains(c.Env, "NEW=1") {
		t.Errorf("user/workdir/env overrides: %+v", c)
	}
	if m := res.Sidecar; m.Process.Cwd != "/tmp" || m.Recipe.Process.User != "nobody" {
		t.Errorf("manifest: process %+v, options %+v", m.Process, m.Recipe)
	}

	// The up-to-date check: same overrides up to date, others not.
	out := t.TempDir() + "/"
	opts := convert.Options{Output: out, Process: &template.ProcessOverrides{Cmd: sl("sleep", "5")}}
	built, err := convert.Convert(context.Background(), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	digest := func() (string, error) { return built.Sidecar.Source.SourceDigest, nil }
	if _, ok := convert.UpToDate(opts, built.Sidecar.Source.Reference, digest); !ok {
		t.Error("same overrides: not up to date")
	}
	opts.Process = &template.ProcessOverrides{Cmd: sl("sleep", "6")}
	if _, ok := convert.UpToDate(opts, built.Sidecar.Source.Reference, digest); ok {
		t.Error("another --cmd: up to date")
	}
	opts.Process = nil
	if _, ok := convert.UpToDate(opts, built.Sidecar.Source.Reference, digest); ok {
		t.Error("no overrides: up to date")
	}

	// --cmd alone needs the recorded entrypoint.
	delete(b.Spec.Annotations, "io.nexcage.image.entrypoint")
	if _, err := convert.Convert(context.Background(), b, convert.Options{Output: t.TempDir() + "/", Process: &template.ProcessOverrides{Cmd: sl("x")}}); !errors.Is(err, convert.ErrOverride) {
		t.Errorf("--cmd without a recorded entrypoint: %v", err)
	}
}

// TestArgvConfs: the entrypoint of the argv and shell-form cases reads
// back (as PVE and LXC 6 read it) as the image's argv, or for the
// shell-form script an eval of it, and PVE's own code accepts the .conf.
// Before: the shell-form case failed with "argument 2 contains both kinds
// of quotes", and the argv case's line lost its outer quotes in LXC.
func TestArgvConfs(t *testing.T) {
	rootless := os.Geteuid() != 0
	res := convertTo(t, unpack(t, corpusCase(t, "alpine-argv"), rootless), t.TempDir(), convert.Options{})
	want := append([]string{"/opt/my app/run"}, testimage.ArgvHazards...)
	if got := lxc.SplitCommand(readConf(t, res).Entrypoint); !reflect.DeepEqual(got, want) {
		t.Errorf("argv: got %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(res.Sidecar.Process.Args, want) {
		t.Errorf("the manifest's args %q", res.Sidecar.Process.Args)
	}
	checkPVE(t, res)

	res = convertTo(t, unpack(t, corpusCase(t, "alpine-shell-form"), rootless), t.TempDir(), convert.Options{})
	got := lxc.SplitCommand(readConf(t, res).Entrypoint)
	if len(got) != 3 || got[0] != "/bin/sh" || got[1] != "-c" || !strings.HasPrefix(got[2], `eval "`) || strings.Contains(got[2], "'") {
		t.Errorf("shell form: %q", got)
	}
	if !reflect.DeepEqual(res.Sidecar.Process.Args, []string{"/bin/sh", "-c", testimage.ShellFormScript}) {
		t.Errorf("the manifest's args %q, want the image's", res.Sidecar.Process.Args)
	}
	checkPVE(t, res)
}

// --user resolves supplementary groups as PVE's import and docker do:
// for a user named or found by uid in /etc/passwd without a group, not
// for USER:GROUP.
func TestUserOverrideGroups(t *testing.T) {
	b := unpack(t, corpusCase(t, "alpine-named-user"), os.Geteuid() != 0)
	for _, tc := range []struct{ user, want string }{{"1000", "10,18"}, {"app", "10,18"}, {"app:audio", ""}, {"root", ""}} {
		res := convertTo(t, b, t.TempDir(), convert.Options{Process: &template.ProcessOverrides{User: tc.user}})
		got := strings.Join(raw(readConf(t, res), "lxc.init.groups"), ";")
		if got != tc.want {
			t.Errorf("--user %s: lxc.init.groups %q, want %q", tc.user, got, tc.want)
		}
	}
}
