package limits

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestReadFileRefusesBySizeUnread(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(`{"a":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p, 7, "the config"); err != nil || string(b) != `{"a":1}` {
		t.Fatalf("at the limit: %q, %v", b, err)
	}
	os.Truncate(p, 1<<40) // a terabyte, sparse: read, it would take hours
	_, err := ReadFile(p, 4<<20, "the config")
	le, ok := As(err)
	if !ok || le.Limit != MetadataSize || le.Value != 1<<40 || le.Max != 4<<20 || !strings.Contains(err.Error(), "the config is 1.0 TiB") {
		t.Fatalf("err = %v, want a metadata size Error naming the config and its size", err)
	}
	// A pipe has no size to check first: it is read up to the limit.
	_, err = ReadAll(strings.NewReader(strings.Repeat("x", 100)), 10, "the index")
	if le, ok := As(err); !ok || le.Value != 11 {
		t.Fatalf("err = %v, want an Error after 11 bytes", err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none"), 1, "x"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
}

func TestDiskReserve(t *testing.T) {
	dir := t.TempDir()
	avail, err := Available(dir)
	if err != nil || avail <= 0 {
		t.Fatalf("Available: %d, %v", avail, err)
	}
	d := &Disk{Dir: dir}
	if err := d.Reserve(1<<10, "a small file"); err != nil {
		t.Fatal(err)
	}
	kind := errors.New("kind")
	err = d.Reserve(avail+1<<40, "entry \"huge\"")
	le, ok := As(err)
	if !ok || le.Limit != FreeSpace || !strings.Contains(err.Error(), `entry "huge" needs`) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err = %v, want a free space Error naming the entry and the directory", err)
	}
	if errors.Is(err, kind) || errors.Is(Errorf(kind, Entries, 2, 1, "x"), kind) == false {
		t.Error("Kind must be matched by errors.Is, and only it")
	}
}
