package convert_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
)

// bootTemplate creates and starts a container from a converted template
// the way PVE would: its extraction, its CT config turned into LXC config.
func bootTemplate(t *testing.T, res *convert.Result, edit func(*lxc.Config)) *pvetest.Container {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"lxc-start", "lxc-attach", "lxc-usernsexec"} {
		testenv.RequireTool(t, tool)
	}
	conf, err := lxc.Parse(string(readFile(t, res.Config)))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(conf)
	}
	lxcpath, err := os.MkdirTemp("", "nexcage-boot-")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := "ct" + filepath.Base(lxcpath)[len("nexcage-boot-"):]
	c, err := pvetest.Create(ctx, lxcpath, name, res.Template, conf)
	if err != nil {
		os.RemoveAll(lxcpath)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		os.RemoveAll(lxcpath)
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func attach(t *testing.T, c *pvetest.Container, args ...string) string {
	t.Helper()
	out, err := c.Attach(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bootSystemContainer converts the corpus case name and boots it: Alpine's
// init must be PID 1.
func bootSystemContainer(t *testing.T, name string) *pvetest.Container {
	t.Helper()
	testenv.RequireRoot(t)
	res := convertTo(t, unpack(t, corpusCase(t, name), false), t.TempDir(), convert.Options{})
	c := bootTemplate(t, res, nil)
	if got := strings.TrimSpace(attach(t, c, "/bin/cat", "/proc/1/comm")); got != "init" {
		t.Errorf("PID 1 is %q, want Alpine's init", got)
	}
	return c
}

// TestAlpineBootsAsSystemContainer: the Alpine template boots unprivileged
// with its own init as PID 1.
func TestAlpineBootsAsSystemContainer(t *testing.T) {
	c := bootSystemContainer(t, "alpine-amd64")
	if got := attach(t, c, "/bin/cat", "/etc/alpine-release"); !strings.HasPrefix(got, "3.20") {
		t.Errorf("/etc/alpine-release = %q", got)
	}
	if got := attach(t, c, "/bin/cat", "/proc/self/uid_map"); !strings.Contains(got, "100000") {
		t.Errorf("the container is not unprivileged: uid_map %q", got)
	}
}

// TestAppImageRunsItsEntrypoint: an application image runs its entrypoint
// as its user, in its working directory, with its environment and the
// bundle's bind mount and tmpfs, all checked from outside.
func TestAppImageRunsItsEntrypoint(t *testing.T) {
	testenv.RequireRoot(t)
	b := appBundle(t)
	res := convertTo(t, b, t.TempDir(), convert.Options{})
	// The container's mapped root must reach the bind source.
	hostDir, err := os.MkdirTemp("", "nexcage-bind-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostDir) })
	os.Chmod(hostDir, 0o755)
	os.WriteFile(filepath.Join(hostDir, "hello"), []byte("from the host\n"), 0o644)
	c := bootTemplate(t, res, func(conf *lxc.Config) {
		// The bundle names /srv/appdata; the test's host directory stands in.
		for i := range conf.MountPoints {
			if conf.MountPoints[i].Volume == "/srv/appdata" {
				conf.MountPoints[i].Volume = hostDir
			}
		}
	})
	status := attach(t, c, "/bin/cat", "/proc/1/status")
	if !strings.Contains(status, "Uid:\t1000\t1000\t1000\t1000") || !strings.Contains(status, "Gid:\t1000\t1000\t1000\t1000") {
		t.Errorf("PID 1 does not run as 1000:1000:\n%s", status)
	}
	if cmd := attach(t, c, "/bin/cat", "/proc/1/cmdline"); strings.ReplaceAll(cmd, "\x00", " ") != "sleep infinity " {
		t.Errorf("PID 1 is %q, want the entrypoint's exec of \"sleep infinity\"", cmd)
	}
	if cwd := strings.TrimSpace(attach(t, c, "/bin/busybox", "readlink", "/proc/1/cwd")); cwd != "/app" {
		t.Errorf("PID 1 runs in %q, want /app", cwd)
	}
	env := strings.Split(attach(t, c, "/bin/cat", "/proc/1/environ"), "\x00")
	for _, want := range []string{"GREETING=hello world", "APP_MODE=test"} {
		if !slices.Contains(env, want) {
			t.Errorf("PID 1's environment %q lacks %s", env, want)
		}
	}
	mounts := attach(t, c, "/bin/cat", "/proc/1/mounts")
	if !strings.Contains(mounts, " /srv/data ") || !strings.Contains(mounts, "tmpfs /run/app tmpfs") {
		t.Errorf("the bind mount or the tmpfs is missing:\n%s", mounts)
	}
	if got := attach(t, c, "/bin/cat", "/srv/data/hello"); got != "from the host\n" {
		t.Errorf("the bind mount shows %q", got)
	}
	if _, err := c.Attach(context.Background(), "/bin/touch", "/srv/data/new"); err == nil {
		t.Error("the read-only bind mount accepted a write")
	}
}
