package pct_test

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// TestVolumeOwnedAsInImage: an application running as uid 1000, whose
// image has its VOLUME /data owned by 1000 with mode 0750, can write its
// volume after a deploy on PVE 9.2 (keepattrs=1: PVE gives the volume's
// root the owner and mode of /data in the unprivileged rootfs, shifted by
// 100000). Before, the volume's root belonged to the CT's root and the
// application's write failed. On PVE 9.1, which has no such option, the
// plan says so instead of writing an mp option PVE would refuse.
func TestVolumeOwnedAsInImage(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "lxc-start")
	ctx := context.Background()
	s, h, _ := deployHost(t)
	dir := t.TempDir()
	const entry = "#!/bin/sh\nid -u > /data/by-app\ntrap 'exit 0' TERM\nwhile true; do sleep 1; done\n"
	tmpl := func(name string, raw []lxc.Option) *pct.Template {
		return appTemplateDirs(t, dir, name, "sha256:"+name, map[string]string{"entry.sh": entry},
			[]tar.Header{{Name: "data", Uid: 1000, Gid: 1000, Mode: 0o750}},
			lxc.Config{Entrypoint: "/entry.sh", Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Raw: raw})
	}

	t.Setenv("PVE_VERSION", "9.1.1")
	p91, err := pct.MakePlan(ctx, h, tmpl("v91", nil), pct.Options{Hostname: "app", VolumeSize: 1, RootfsSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(p91.Warnings, "\n"), "keepattrs needs PVE 9.2") || strings.Contains(strings.Join(p91.Set, " "), "keepattrs") {
		t.Errorf("PVE 9.1 plan: warnings %q, set %q; want a warning and no keepattrs", p91.Warnings, p91.Set)
	}

	t.Setenv("PVE_VERSION", "9.2.0")
	v := tmpl("v1", []lxc.Option{{Key: "lxc.init.uid", Value: "1000"}, {Key: "lxc.init.gid", Value: "1000"}})
	p, err := pct.MakePlan(ctx, h, v, pct.Options{Hostname: "app", VolumeSize: 1, RootfsSize: 1, Start: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pct.Deploy(ctx, h, p); err != nil {
		t.Fatal(err)
	}
	defer h.Run(ctx, "pct", "stop", "100")
	conf := readConf(t, s.ConfigPath("pve", 100))
	if !strings.Contains(confKey(conf, "mp0"), "keepattrs=1") {
		t.Errorf("mp0 = %q, want keepattrs=1", confKey(conf, "mp0"))
	}
	vol := volDir(t, s.Path("var/lib/pvesim"), confKey(conf, "mp0"))
	var got []byte
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if got, err = os.ReadFile(filepath.Join(vol, "by-app")); err == nil && len(got) > 0 {
			break
		}
	}
	if string(got) != "1000\n" {
		t.Errorf("the application (uid 1000) wrote %q into its volume (%v), want its uid", got, err)
	}
	fi, err := os.Stat(vol)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 101000 || st.Gid != 101000 || fi.Mode().Perm() != 0o750 {
		t.Errorf("the volume's root is %d:%d %v, want 101000:101000 0750 (the image's 1000:1000 0750, shifted)", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
