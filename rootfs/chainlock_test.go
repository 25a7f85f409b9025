package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestChainLock: a chain's lock excludes another holder in this process
// (a second job waits until the first releases) and in another process
// (flock(1) on the same file fails while it is held); a waiter gives up
// when its context ends; a lock directory that is a symlink is not
// followed (the build goes on unlocked, nothing is created there).
func TestChainLock(t *testing.T) {
	flock := testenv.RequireTool(t, "flock")
	s := newStore(t)
	key := digest.FromString("chain").Encoded()
	unlock := s.lockChain(context.Background(), key)
	lockFile := filepath.Join(s.Dir, chainLocksDir, key+".lock")
	if err := exec.Command(flock, "-n", lockFile, "true").Run(); err == nil {
		t.Error("another process took the chain lock while it was held")
	}

	got := make(chan struct{})
	go func() {
		s.lockChain(context.Background(), key)()
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second job took the chain lock while it was held")
	case <-time.After(200 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.lockChain(ctx, key)()
	if time.Since(start) > 2*time.Second {
		t.Error("a waiter did not give up when its context ended")
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting job never got the lock after its release")
	}
	if err := exec.Command(flock, "-n", lockFile, "true").Run(); err != nil {
		t.Errorf("the chain lock is still held after every release: %v", err)
	}

	// A symlinked lock directory: not followed.
	s2 := newStore(t)
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(s2.Dir, "cache"), 0o755)
	if err := os.Symlink(outside, filepath.Join(s2.Dir, chainLocksDir)); err != nil {
		t.Fatal(err)
	}
	s2.lockChain(context.Background(), key)()
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the chain lock followed a symlink: %v", ents)
	}
}
