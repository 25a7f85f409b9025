package pct_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// TestMakePlanRefusesHostileTemplates: what a template's sidecars ask for
// was written by whoever made the template. Raw lxc.* keys, bind mounts of
// the host's system directories and volume paths that inject into a
// property string are refused before any PVE command that changes the
// host (issue 15, findings 2, 6 and 7), and so are the same paths from
// --mount.
func TestMakePlanRefusesHostileTemplates(t *testing.T) {
	testenv.RequireRoot(t)
	template := buildAlpineTemplate(t, t.TempDir())
	ctx := context.Background()
	s, h, rec := deployHost(t)
	hostDir := s.Path("srv/hostdata")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A symlink to /etc, which a bind mount's path must not pass through.
	link := s.Path("srv/link")
	os.Symlink("/etc", link)
	// The edits a row makes: one raw lxc.* key, one bind mount point or
	// one volume in the template's sidecars, or one --mount.
	type edit = func(*pct.Template, *pct.Options)
	rawKey := func(key, value string) edit {
		return func(tm *pct.Template, _ *pct.Options) {
			tm.Config.Raw = append(tm.Config.Raw, lxc.Option{Key: key, Value: value})
		}
	}
	templateBind := func(volume, path string) edit {
		return func(tm *pct.Template, _ *pct.Options) {
			tm.Config.MountPoints = append(tm.Config.MountPoints, lxc.MountPoint{Volume: volume, Path: path})
		}
	}
	volume := func(v string) edit {
		return func(tm *pct.Template, _ *pct.Options) { tm.Volumes = []string{v} }
	}
	mount := func(source, dest string) edit {
		return func(_ *pct.Template, o *pct.Options) { o.Mounts = []pct.BindMount{{Source: source, Dest: dest}} }
	}
	for _, tc := range []struct {
		name  string
		edit  edit
		words []string
	}{
		{"pre-start hook", rawKey("lxc.hook.pre-start", "/bin/sh -c 'touch /pwned'"), []string{"lxc.hook.pre-start", "not one nexcage writes"}},
		{"apparmor unconfined", rawKey("lxc.apparmor.profile", "unconfined"), []string{"lxc.apparmor.profile"}},
		{"empty cap.drop", rawKey("lxc.cap.drop", ""), []string{"lxc.cap.drop"}},
		{"tmpfs with bind option", rawKey("lxc.mount.entry", "tmpfs srv tmpfs size=1m,bind,create=dir 0 0"), []string{`tmpfs option "bind"`}},
		{"template binds the host's /", templateBind("/", "/host"), []string{"the template's mp0", "the host's root directory"}},
		{"template binds /etc/pve", templateBind("/etc/pve", "/pve"), []string{"/etc/pve"}},
		{"template bind mp= /", templateBind("/srv/data", "/"), []string{"hide the rootfs"}},
		{"volume with a newline", volume("/data\nlxc.hook.pre-start: /x"), []string{"image volume", "control character"}},
		{"relative volume", volume("data"), []string{"image volume", "not an absolute path"}},
		{"volume injecting a property", volume("/data,backup=1"), []string{"image volume", "comma"}},
		{"privileged-only by its .json", func(tm *pct.Template, _ *pct.Options) {
			tm.Privileged = true
		}, []string{"privileged-only", "Unprivileged=false"}},
		{"--mount /", mount("/", "/host"), []string{"Mounts source", "the host's root directory"}},
		{"--mount /etc/pve", mount("/etc/pve", "/pve"), []string{"/etc/pve"}},
		{"--mount through a symlink", mount(link+"/ssl", "/ssl"), []string{"a symlink on the way leads to /etc/ssl"}},
		{"--mount destination with a newline", mount(hostDir, "/data\nx"), []string{"control character"}},
		{"--mount destination with '='", mount(hostDir, "/data=x"), []string{"'='"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := template()
			o := pct.Options{Hostname: "hostile", Start: true}
			tc.edit(tm, &o)
			rec.calls = nil
			_, err := pct.MakePlan(ctx, h, tm, o)
			wantKind(t, err, pct.ErrInvalidArgument, tc.words...)
			if c := rec.changes(); len(c) != 0 {
				t.Errorf("commands that change the host ran: %v", c)
			}
			noCT(t, s, 100)
		})
	}
}

// TestDeployPasswordStaysOffArgv: pct create takes the root password on
// its standard input (its --password is an interactive parameter: empty,
// PVE reads it twice from stdin), so it is in no argv, no listing and no
// result; the container's root gets it all the same (finding 9).
func TestDeployPasswordStaysOffArgv(t *testing.T) {
	testenv.RequireRoot(t)
	openssl := testenv.RequireTool(t, "openssl")
	template := buildAlpineTemplate(t, t.TempDir())
	ctx := context.Background()
	s, h, rec := deployHost(t)
	const secret = "Xyzzy-s3cret-pw"
	p, err := pct.MakePlan(ctx, h, template(), pct.Options{Hostname: "pw", Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pct.Deploy(ctx, h, p)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(res)
	shown := strings.Join(p.Commands(), "\n") + "\n" + string(js) + "\n" + strings.Join(rec.calls, "\n")
	if strings.Contains(shown, secret) {
		t.Errorf("the password is in a command line, the listing or the result:\n%s", shown)
	}
	if c := rec.ran("pct create 100"); len(c) != 1 || !strings.Contains(c[0], " --password=") {
		t.Errorf("pct create %v, want one with --password= (read from stdin)", c)
	}
	conf, _ := os.ReadFile(s.ConfigPath("pve", 100))
	if strings.Contains(string(conf), secret) {
		t.Errorf("the password is in the CT config")
	}
	// The root password in the container is the one given.
	shadow, err := os.ReadFile(s.Path("var/lib/lxc/100/rootfs/etc/shadow"))
	if err != nil {
		t.Fatal(err)
	}
	var hash string
	for _, l := range strings.Split(string(shadow), "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 && f[0] == "root" {
			hash = f[1]
		}
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[1] != "6" {
		t.Fatalf("root's password hash %q is not SHA-512 crypt", hash)
	}
	cmd := exec.Command(openssl, "passwd", "-6", "-salt", parts[2], "-stdin")
	cmd.Stdin = strings.NewReader(secret + "\n")
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != hash {
		t.Errorf("root's hash %q is not of the password given (%s, %v)", hash, out, err)
	}

	// pvesh cannot read it from stdin; a line break cannot go through it.
	for _, o := range []pct.Options{
		{Password: secret, Node: "pve2"},
		{Password: "line\nbreak"},
	} {
		_, err := pct.MakePlan(ctx, h, template(), o)
		if pe := wantKind(t, err, pct.ErrInvalidArgument); pe.Param != "password" || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "line\nbreak") {
			t.Errorf("%v: param %q; the message must not hold the password", err, pe.Param)
		}
	}
}
