package lxc

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRenderIsPVESyntaxAndParsesBack(t *testing.T) {
	backup := false
	c := &Config{
		Description:  "built by nexcage\nfrom docker://x",
		Arch:         "amd64",
		OSType:       "alpine",
		Hostname:     "app",
		Unprivileged: true,
		Cmode:        "console",
		Entrypoint:   "/srv/run.sh --port 80",
		Env:          []string{"PATH=/usr/bin:/bin", "GREETING=hello world"},
		MountPoints: []MountPoint{
			{Index: 0, Volume: "/srv/data", Path: "/data", RO: true},
			{Index: 10, Volume: "local-lvm:8", Path: "/var/lib/db", Backup: &backup},
			{Index: 2, Volume: "/srv/logs", Path: "/logs"},
		},
		Options: []Option{{"memory", "512"}, {"net0", "name=eth0,bridge=vmbr0,ip=dhcp"}},
		Raw:     []Option{{"lxc.init.cwd", "/srv"}, {"lxc.mount.entry", "tmpfs run tmpfs mode=755 0 0"}},
	}
	want := `#built by nexcage
#from docker://x
arch: amd64
cmode: console
entrypoint: /srv/run.sh --port 80
hostname: app
memory: 512
mp0: /srv/data,mp=/data,ro=1
mp2: /srv/logs,mp=/logs
mp10: local-lvm:8,mp=/var/lib/db,backup=0
net0: name=eth0,bridge=vmbr0,ip=dhcp
ostype: alpine
unprivileged: 1
lxc.environment.runtime: PATH=/usr/bin:/bin
lxc.environment.runtime: GREETING=hello world
lxc.init.cwd: /srv
lxc.mount.entry: tmpfs run tmpfs mode=755 0 0
`
	got := c.Render()
	if got != want {
		t.Fatalf("Render:\n%s\nwant:\n%s", got, want)
	}
	back, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if again := back.Render(); again != want {
		t.Fatalf("parse+render changed the config:\n%s", again)
	}
}

func TestParseStopsAtSnapshotsAndAcceptsLXCStyle(t *testing.T) {
	c, err := Parse("arch: arm64\nlxc.init.cmd = /bin/app\n\n[snap1]\narch: amd64\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Arch != "arm64" || len(c.Raw) != 1 || c.Raw[0] != (Option{"lxc.init.cmd", "/bin/app"}) {
		t.Fatalf("parsed %+v", c)
	}
}

func TestParseRefusesWhatPVERefuses(t *testing.T) {
	for text, want := range map[string]string{
		"bogus: 1\n":                      `unknown key "bogus"`,
		"lxc.rootfs.path: /x\n":           "lxc.rootfs.path is refused",
		"lxc.frobnicate: 1\n":             "not one PVE accepts",
		"mp0: /a\n":                       "needs a volume and mp=PATH",
		"mp300: /a,mp=/b\n":               "mp0 to mp255",
		"arch amd64\n":                    "not a \"key: value\" line",
		"mp1: /a,mp=/b,colour=red\n":      `unknown property "colour"`,
		"arch: amd64\nnet99: name=eth0\n": `unknown key "net99"`,
	} {
		_, err := Parse(text)
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want a ParseError mentioning %q", text, err, want)
		}
	}
}

func TestFromSpecMapsMounts(t *testing.T) {
	spec := &rspec.Spec{
		Hostname: "web",
		Process:  &rspec.Process{Args: []string{"/srv/run", "a b"}, Env: []string{"A=1"}, Cwd: "/srv", User: rspec.User{UID: 1000, GID: 100}},
		Mounts: []rspec.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts"},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
			{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "ro"}},
			{Destination: "/cache", Source: "/srv/cache/app", Options: []string{"bind"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=64m", "mode=755"}},
		},
		Annotations: map[string]string{AnnotationStopSignal: "SIGQUIT"},
	}
	c, err := FromSpec(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	wantMP := []MountPoint{{Index: 0, Volume: "/srv/data", Path: "/data", RO: true}, {Index: 1, Volume: "/srv/cache/app", Path: "/cache"}}
	if !reflect.DeepEqual(c.MountPoints, wantMP) {
		t.Errorf("mount points %+v, want %+v", c.MountPoints, wantMP)
	}
	wantRaw := []Option{
		{"lxc.mount.entry", "tmpfs run tmpfs mode=755,size=64m 0 0"},
		{"lxc.init.cwd", "/srv"}, {"lxc.init.uid", "1000"}, {"lxc.init.gid", "100"}, {"lxc.signal.halt", "SIGQUIT"},
	}
	if !reflect.DeepEqual(c.Raw, wantRaw) {
		t.Errorf("raw %+v, want %+v", c.Raw, wantRaw)
	}
	if c.Entrypoint != "/srv/run 'a b'" || c.Cmode != "console" || c.Hostname != "web" || len(c.Env) != 1 {
		t.Errorf("process mapping wrong: %+v", c)
	}
	// A system container keeps mounts, environment, user, working
	// directory and stop signal, as PVE's OCI import does, but not the
	// entrypoint: PVE boots its default init.
	sys, err := FromSpec(spec, true)
	if err != nil || sys.Entrypoint != "" || sys.Cmode != "" || len(sys.MountPoints) != 2 || !reflect.DeepEqual(sys.Raw, wantRaw) || !reflect.DeepEqual(sys.Env, c.Env) {
		t.Errorf("system container mapping %+v, %v", sys, err)
	}
}

func TestFromSpecRefusesUnmappableMounts(t *testing.T) {
	for _, tc := range []struct {
		m     rspec.Mount
		field string
	}{
		{rspec.Mount{Destination: "/data", Type: "bind", Source: "data"}, "source"},
		{rspec.Mount{Destination: "/data", Type: "bind", Source: "/srv/../etc"}, "source"},
		{rspec.Mount{Destination: "/data", Type: "nfs", Source: "server:/x"}, "type"},
		{rspec.Mount{Destination: "/a/../b", Type: "tmpfs"}, "destination"},
		{rspec.Mount{Destination: "data", Type: "tmpfs"}, "destination"},
	} {
		spec := &rspec.Spec{Mounts: []rspec.Mount{{Destination: "/proc", Type: "proc"}, tc.m}}
		_, err := FromSpec(spec, true)
		var me *MountError
		if !errors.As(err, &me) || me.Index != 1 || me.Field != tc.field {
			t.Errorf("%+v: err = %v, want a MountError for mounts[1].%s", tc.m, err, tc.field)
		}
	}
}

func TestJoinCommandRoundTrips(t *testing.T) {
	for _, args := range [][]string{
		{"/bin/app"}, {"/bin/sh", "-c", "echo 'hi' && sleep 1"}, {"x", ""}, {"a b", `say "hi"`},
	} {
		line, err := JoinCommand(args)
		if err != nil {
			t.Fatal(err)
		}
		if got := SplitCommand(line); !reflect.DeepEqual(got, args) {
			t.Errorf("%q -> %q -> %q", args, line, got)
		}
	}
	if _, err := JoinCommand([]string{`both ' and "`}); err == nil {
		t.Error("an argument with both quote kinds was accepted")
	}
}

func TestIsSystemContainer(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		hasInit bool
		want    bool
	}{
		{[]string{"/sbin/init"}, false, true},
		{[]string{"/bin/sh"}, true, true},
		{[]string{"/bin/sh"}, false, false},
		{[]string{"/bin/sh", "-c", "x"}, true, false},
		{[]string{"/srv/app"}, true, false},
		{nil, true, true},
	} {
		if got := IsSystemContainer(tc.args, tc.hasInit); got != tc.want {
			t.Errorf("IsSystemContainer(%q, %v) = %v", tc.args, tc.hasInit, got)
		}
	}
}

func TestValidDNSName(t *testing.T) {
	for s, want := range map[string]bool{"web": true, "a-b.example.com": true, "-x": false, "a_b": false, "": false, "x.": false} {
		if ValidDNSName(s) != want {
			t.Errorf("ValidDNSName(%q) != %v", s, want)
		}
	}
}
