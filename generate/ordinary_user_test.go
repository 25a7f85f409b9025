package generate_test

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/rootfs"
)

// TestAsOrdinaryUser runs generate as uid 65534, where the kernel really
// refuses what root may do (chown, user.* xattrs on read-only files,
// entering 0555 and 0711 directories): the rootless bundle must still
// convert to the template a root one gives, and a rootfs the user cannot
// read must be refused, naming the file and the fix.
func TestAsOrdinaryUser(t *testing.T) {
	user := testenv.NewNobody(t, "nexcage-generate-user-")
	dir, work := user.Dir, user.Work
	// The test binary, where uid 65534 may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "generate.test")
	copyExecutable(t, self, bin)

	child := func(env ...string) (*generate.Result, string, error) {
		cmd := user.Command(bin)
		cmd.Env = append(append(cmd.Env, "NEXCAGE_GENERATE_CHILD=1"), env...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, stderr.String(), err
		}
		var res generate.Result
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("child output %q: %v", out, err)
		}
		return &res, stderr.String(), nil
	}

	// A template whose owners, read-only directories and xattrs only root
	// can set directly.
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(dir, "odd.tar.zst")
	os.WriteFile(odd, zstdOf(t, testbundle.Tar(t, testbundle.DirM("./"),
		testbundle.Member{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./ro/", Mode: 0o555, Uid: 1000, Gid: 1000, PAXRecords: map[string]string{"SCHILY.xattr.user.dir": "d"}}},
		testbundle.Member{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./ro/file", Mode: 0o444, Uid: 1000, Gid: 50, Size: 3, PAXRecords: map[string]string{"SCHILY.xattr.user.note": "n"}}, Body: "ro\n"},
		testbundle.Member{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./tight/", Mode: 0o711}},
		testbundle.Member{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "./tight/secret", Mode: 0, Size: 2}, Body: "s\n"},
		testbundle.HardlinkM("./tight/secret2", "./tight/secret"),
		testbundle.FileM("./bin/sh", string(sh[:64])))), 0o644)

	templates := map[string]string{"odd": odd}
	for _, name := range []string{"modes", "alpine-app"} {
		built := build(t, corpusCase(t, name), convert.Options{Privileged: true, ToolVersion: "test"})
		for _, f := range []string{built.Template, built.Config, built.SidecarJSON} {
			copyExecutable(t, f, filepath.Join(dir, name+strings.TrimPrefix(filepath.Base(f), strings.TrimSuffix(filepath.Base(built.Template), ".tar.zst"))))
		}
		templates[name] = filepath.Join(dir, name+".tar.zst")
	}
	for name, tmpl := range templates {
		t.Run(name, func(t *testing.T) {
			bundle := filepath.Join(work, name)
			res, stderr, err := child("TEMPLATE="+tmpl, "BUNDLE="+bundle)
			if err != nil {
				t.Fatalf("generate as uid 65534: %v\n%s", err, stderr)
			}
			defer rootfs.RemoveBundle(bundle)
			if !res.Rootless {
				t.Error("the bundle is not rootless")
			}
			var st unix.Stat_t
			unix.Lstat(filepath.Join(bundle, "rootfs"), &st)
			if st.Uid != 65534 {
				t.Errorf("the rootfs is owned by %d, want the user", st.Uid)
			}
			validateConfig(t, filepath.Join(bundle, "config.json"))
			opts := convert.Options{Name: name, Privileged: true, ToolVersion: "test"}
			rootBundle, _ := generateBundle(t, generate.Options{Template: tmpl})
			want := convertBundle(t, rootBundle, opts)
			got := convertBundle(t, bundle, opts)
			sameTemplate(t, want, got)
		})
	}

	// A rootfs with a file only root may read: refused, naming it.
	src := oddTree(t, false)
	os.Chmod(filepath.Dir(src), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(src)), 0o755)
	bundle := filepath.Join(work, "fromdir")
	_, stderr, err := child("ROOTFS="+src, "BUNDLE="+bundle)
	if err == nil || !strings.Contains(stderr, "cannot read "+src+"/etc/shadow") || !strings.Contains(stderr, "run as root") {
		t.Errorf("copying an unreadable rootfs as an ordinary user: %v\n%s", err, stderr)
	}
	if l := leftovers(t, work); strings.Join(l, " ") != "" {
		t.Errorf("left behind: %v", l)
	}
}

func copyExecutable(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}
