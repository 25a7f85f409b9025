package pvetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nexcage/nexcage/internal/fstree"
)

// ExtractTree extracts a template as PVE does (see Extract) into a fresh
// directory and returns what it holds, seen as fstree.TemplateView sees a
// rootfs: what a test compares with the rootfs the template was made from.
func ExtractTree(t testing.TB, template string, unprivileged bool) fstree.Tree {
	t.Helper()
	work := t.TempDir()
	// The mapped root must be able to reach the rootfs, as under
	// /var/lib/lxc on a PVE host.
	for _, dir := range []string{work, filepath.Dir(work)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(work, "rootfs")
	if _, err := Extract(context.Background(), template, root, unprivileged); err != nil {
		t.Fatal(err)
	}
	tree, err := fstree.Snapshot(root, fstree.TemplateView)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// Expected is rootfs as an extraction by PVE must give it back: when
// unprivileged, owners shifted by the id map, ids above 65535 squashed to
// nobody (65534) first, as convert's SquashHighIDs does.
func Expected(rootfs fstree.Tree, unprivileged bool) fstree.Tree {
	out := fstree.Tree{}
	for p, e := range rootfs {
		c := *e
		if unprivileged {
			c.UID, c.GID = shift(c.UID), shift(c.GID)
		}
		out[p] = &c
	}
	return out
}

func shift(id uint32) uint32 {
	if id > 65535 {
		id = 65534
	}
	return id + IDMapBase
}
