package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// Issue 15: layers that put symlinks to the host where unpack later looks
// (its implicit directories, the account files) must not make it touch or
// read the host.

// TestUnpackImplicitDirsStayInRoot (finding 1): "x/v/f" makes x and x/v
// implicit directories, then x becomes a symlink to the host directory
// holding v. Fixing up x/v's mode and time must not chmod the host's v.
func TestUnpackImplicitDirsStayInRoot(t *testing.T) {
	s := leakCheckedStore(t)
	for _, tc := range []struct {
		name                   string
		later, climb, rootless bool
	}{
		{"absolute symlink in a later layer", true, false, false},
		{"absolute symlink in the same layer", false, false, false},
		{"climbing symlink in a later layer", true, true, false},
		{"climbing symlink in the same layer", false, true, false},
		{"rootless, absolute symlink in a later layer", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := testenv.VictimDir(t, "v")
			img, err := testimage.ImplicitDirToHost(host, "v", tc.later, tc.climb)
			if err != nil {
				t.Fatal(err)
			}
			stored := pullCase(t, s, testimage.Case{Name: "implicit", Image: img})
			res, err := s.Unpack(context.Background(), stored, filepath.Join(t.TempDir(), "b"), UnpackOptions{Rootless: tc.rootless})
			if err != nil {
				t.Fatalf("a symlink to anywhere is a valid image: %v", err)
			}
			// The image's own tree is as it says: x is the symlink.
			if target, err := os.Readlink(filepath.Join(res.Rootfs, "x")); err != nil || !strings.HasSuffix(target, strings.TrimPrefix(host, "/")) {
				t.Errorf("x -> %q, %v", target, err)
			}
		})
	}
}

// accountsImage is an image running as user whose /etc holds the given
// entries.
func accountsImage(t *testing.T, user string, etc ...testimage.Entry) v1.Image {
	t.Helper()
	img, err := testimage.Layers(v1.Config{User: user, Entrypoint: []string{"/app"}}, testimage.Gzip, append([]testimage.Entry{testimage.Dir("etc/", 0o755)}, etc...))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestUnpackUserFromRootfsOnly (finding 3): /etc/passwd and /etc/group
// are resolved as the container resolves them. Absolute symlinks to host
// files point at nothing inside the rootfs, so the user is unknown (as
// build says); an absolute symlink to a file inside the rootfs is followed
// there, and unpack and build agree on the result.
func TestUnpackUserFromRootfsOnly(t *testing.T) {
	s := leakCheckedStore(t)
	t.Run("symlinks to the host", func(t *testing.T) {
		host := t.TempDir()
		passwd, group := filepath.Join(host, "passwd"), filepath.Join(host, "group")
		testenv.VictimFile(t, passwd, "hostuser:x:4242:4242:host:/host-home:/bin/sh\n")
		testenv.VictimFile(t, group, "hostgroup:x:4242:\nwheel:x:4343:hostuser\n")
		img := pullCase(t, s, testimage.Case{Name: "host-accounts", Image: accountsImage(t, "hostuser",
			testimage.Symlink("etc/passwd", passwd), testimage.Symlink("etc/group", group))})
		bundle := filepath.Join(t.TempDir(), "b")
		_, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{})
		if err == nil || !strings.Contains(err.Error(), "unable to find user hostuser") {
			cfg, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
			t.Fatalf("unpack: %v, want the user unknown; config.json:\n%s", err, cfg)
		}
		f, ferr := s.Flatten(context.Background(), img, FlattenOptions{})
		if ferr == nil {
			f.Close()
		}
		if ferr == nil || !strings.Contains(ferr.Error(), "unable to find user hostuser") {
			t.Errorf("build (flatten): %v, want the same refusal as unpack", ferr)
		}
	})
	t.Run("symlinks inside the rootfs", func(t *testing.T) {
		img := pullCase(t, s, testimage.Case{Name: "inner-accounts", Image: accountsImage(t, "app",
			testimage.File("etc/real-passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n"),
			testimage.File("etc/real-group", 0o644, "root:x:0:\napp:x:2345:\nextra:x:3456:app\n"),
			testimage.Symlink("etc/passwd", "/etc/real-passwd"),
			testimage.Symlink("etc/group", "../etc/./real-group"))})
		res, err := s.Unpack(context.Background(), img, filepath.Join(t.TempDir(), "b"), UnpackOptions{})
		if err != nil {
			t.Fatal(err)
		}
		spec := specOf(t, res.Config)
		u := spec.Process.User
		if u.UID != 1234 || u.GID != 2345 || len(u.AdditionalGids) != 1 || u.AdditionalGids[0] != 3456 || !slices.Contains(spec.Process.Env, "HOME=/home/app") {
			t.Errorf("unpack resolved app as %+v, env %v; want 1234:2345, extra group 3456, HOME=/home/app", u, spec.Process.Env)
		}
		if _, err := os.Stat(filepath.Join(res.Bundle, ".nexcage-accounts")); !os.IsNotExist(err) {
			t.Errorf("the account files' copies were left in the bundle: %v", err)
		}
		f, err := s.Flatten(context.Background(), img, FlattenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if fu := f.Spec.Process.User; fu.UID != u.UID || fu.GID != u.GID || len(fu.AdditionalGids) != len(u.AdditionalGids) {
			t.Errorf("build resolved app as %+v, unpack as %+v", fu, u)
		}
	})
}

// TestUnpackRootlessDropsDevices (finding 11c): only root can create
// device nodes; a rootless unpack leaves them out, with a warning, as
// build leaves them out of the template, instead of empty stand-in files
// that convert would put in the template. Fifos are kept.
func TestUnpackRootlessDropsDevices(t *testing.T) {
	s := leakCheckedStore(t)
	img, err := testimage.Layers(v1.Config{}, testimage.Gzip, []testimage.Entry{
		testimage.Dir("devices/", 0o755),
		testimage.File("devices/replaced", 0o644, "lower\n"),
		testimage.CharDev("devices/restored", 0o666, 1, 3),
	}, []testimage.Entry{
		testimage.CharDev("devices/null", 0o666, 1, 3),
		testimage.BlockDev("devices/loop0", 0o660, 7, 0),
		testimage.Hardlink("devices/null-link", "devices/null"),
		testimage.CharDev("devices/replaced", 0o666, 1, 5),
		testimage.File("devices/restored", 0o644, "a file again\n"),
		testimage.Fifo("devices/fifo", 0o620),
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := pullCase(t, s, testimage.Case{Name: "rootless-devices", Image: img})
	res, err := s.Unpack(context.Background(), stored, filepath.Join(t.TempDir(), "b"), UnpackOptions{Rootless: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"devices/null", "devices/loop0", "devices/null-link", "devices/replaced"} {
		if _, err := os.Lstat(filepath.Join(res.Rootfs, p)); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it dropped", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(res.Rootfs, "devices/restored")); err != nil || string(b) != "a file again\n" {
		t.Errorf("a file over a lower device node: %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(res.Rootfs, "devices/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the fifo: %v, %v", fi, err)
	}
	// 1700000000 is the time testimage gives every entry.
	if fi, err := os.Lstat(filepath.Join(res.Rootfs, "devices")); err != nil || fi.ModTime().Unix() != 1700000000 {
		t.Errorf("dropping the devices changed their directory's time: %v, %v", fi.ModTime(), err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "4 device node(s) were not created (e.g. /devices/loop0)") {
		t.Errorf("warnings %q, want one saying 4 device nodes were not created", res.Warnings)
	}
}
