package xattrs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestReadKeepsWhatKeepAccepts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(p, func(string) bool { return true }); err != nil || got != nil {
		t.Fatalf("no xattrs: got %v, %v; want nil, nil", got, err)
	}
	for k, v := range map[string]string{"user.keep": "yes", "user.drop": "no"} {
		if err := unix.Lsetxattr(p, k, []byte(v), 0); errors.Is(err, unix.ENOTSUP) {
			t.Skip("the test directory's filesystem has no user xattrs")
		} else if err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(p, func(n string) bool { return n == "user.keep" })
	if err != nil || len(got) != 1 || got["user.keep"] != "yes" {
		t.Fatalf("got %v, %v; want only user.keep=yes", got, err)
	}
}
