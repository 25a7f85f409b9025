package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/lxc"
)

// buildConf runs the build args, which write to the directory out, and
// returns the one .conf there.
func buildConf(t *testing.T, out string, args ...string) []byte {
	t.Helper()
	if status, stdout, stderr := runCLI(t, args...); status != exitOK {
		t.Fatalf("%q: exit %d\n%s%s", args, status, stdout, stderr)
	}
	confs, _ := filepath.Glob(out + "*.conf")
	if len(confs) != 1 {
		t.Fatalf("confs %v", confs)
	}
	raw, _ := os.ReadFile(confs[0])
	return raw
}

// TestProcessOverrideFlags: build's --entrypoint, --cmd, --env, --user and
// --workdir reach the .conf with docker's semantics, and the up-to-date
// check tells builds with other overrides apart.
func TestProcessOverrideFlags(t *testing.T) {
	t.Setenv("NEXCAGE_STORE", filepath.Join(t.TempDir(), "store"))
	t.Setenv("H16C_FROM_ENV", "from nexcage")
	ref := corpusLayout(t, "alpine-app", "app")
	out := t.TempDir() + "/"
	args := []string{"build", "-q", "-o", out, "--entrypoint", "/bin/sleep", "--cmd", "1000",
		"--env", "APP_MODE=prod", "--env", "H16C_FROM_ENV", "--user", "nobody", "--workdir", "/tmp", ref}
	raw := buildConf(t, out, args...)
	c, err := lxc.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"entrypoint: /bin/sleep 1000", "lxc.environment.runtime: APP_MODE=prod", "lxc.environment.runtime: H16C_FROM_ENV=from nexcage", "lxc.init.uid: 65534", "lxc.init.cwd: /tmp"} {
		if !strings.Contains(string(raw), want+"\n") {
			t.Errorf("the .conf lacks %q:\n%s", want, raw)
		}
	}
	if strings.Contains(string(raw), "APP_MODE=test") || c.Entrypoint == "" {
		t.Errorf("the image's APP_MODE survived, or no entrypoint:\n%s", raw)
	}
	if status, stdout, _ := runCLI(t, args...); status != exitOK || !strings.Contains(stdout, "up to date") {
		t.Errorf("the same overrides again: exit %d, %q, want up to date", status, stdout)
	}
	args[len(args)-2] = "/srv"
	if status, stdout, _ := runCLI(t, args...); status != exitOK || strings.Contains(stdout, "up to date") {
		t.Errorf("another --workdir: exit %d, %q, want a rebuild", status, stdout)
	}

	for _, bad := range [][]string{
		{"--env", "H16C_UNSET_VARIABLE"},
		{"--env", "TRAIL=x "},
		{"--entrypoint", "[not json"},
		{"--workdir", "relative"},
		{"--cmd", `["x", "both ' and \" blank"]`},
		{"--cmd", "echo 'hello world"}, // LXC would run "echo" alone
	} {
		status, _, stderr := runCLI(t, append(append([]string{"build", "-q", "-o", t.TempDir() + "/"}, bad...), ref)...)
		if status != exitUsage || !strings.Contains(stderr, bad[0]) {
			t.Errorf("%q: exit %d, stderr %q; want a usage error naming the flag", bad, status, stderr)
		}
	}
}

// TestEnvTab: a tab inside an --env value, which PVE's env pattern
// takes, builds, and the template's .conf is one deploy reads; another
// control character is a usage error.
func TestEnvTab(t *testing.T) {
	t.Setenv("NEXCAGE_STORE", filepath.Join(t.TempDir(), "store"))
	ref := corpusLayout(t, "alpine-app", "app")
	out := t.TempDir() + "/"
	raw := buildConf(t, out, "build", "-q", "-o", out, "--env", "A=x\ty", ref)
	if !strings.Contains(string(raw), "lxc.environment.runtime: A=x\ty\n") {
		t.Errorf("the .conf lacks A=x<TAB>y:\n%s", raw)
	}
	c, err := lxc.ParseTemplateConfig(string(raw))
	if err != nil {
		t.Fatalf("deploy would refuse the .conf: %v", err)
	}
	if !slices.Contains(c.Env, "A=x\ty") {
		t.Errorf("the parsed env %q lacks A=x<TAB>y", c.Env)
	}
	status, _, stderr := runCLI(t, "build", "-q", "-o", t.TempDir()+"/", "--env", "A=x\x01y", ref)
	if status != exitUsage || !strings.Contains(stderr, "control characters") {
		t.Errorf("--env with \\x01: exit %d, stderr %q; want a usage error", status, stderr)
	}
}
