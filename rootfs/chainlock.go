package rootfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/saferoot"
	"golang.org/x/sys/unix"
)

// chainLocksDir holds one lock file per cached chain being flattened
// (STORE/cache/locks/<chain key>): a build that is about to flatten the
// layers of a chain it will cache takes the chain's lock first, so a
// second build of an image on the same base (another job of
// pipeline.BuildAll, or another nexcage process on the store) waits, then
// finds the chain cached instead of flattening the same layers again at
// the same time. flock conflicts between open file descriptions, so one
// mechanism serves goroutines and processes alike. Prune removes the lock
// files (it runs only while no build holds the store).
const chainLocksDir = "cache/locks"

// chainLockPoll is how often a waiting build tries the lock again: flock
// itself cannot be interrupted by a context.
const chainLockPoll = 20 * time.Millisecond

// lockChain takes the lock of the cached chain key, waiting while another
// build holds it; it returns when ctx ends. A store whose lock cannot be
// made (read-only, a hostile symlink) is not locked: the build goes on,
// at worst flattening the chain twice.
func (s *Store) lockChain(ctx context.Context, key string) func() {
	f := s.openChainLock(key)
	if f == nil {
		return func() {}
	}
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return func() {}
		}
		if !waited && chainLockWaitHook != nil {
			chainLockWaitHook(key)
		}
		waited = true
		select {
		case <-ctx.Done():
			f.Close()
			return func() {}
		case <-time.After(chainLockPoll):
		}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// chainLockWaitHook, when set (tests), hears each build that waits for
// another's chain.
var chainLockWaitHook func(key string)

func (s *Store) openChainLock(key string) *os.File {
	if !validHex(key, 32) {
		return nil
	}
	root, err := saferoot.Open(s.Dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	for _, d := range []string{"cache", chainLocksDir} {
		if err := root.Mkdir(d, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil
		}
	}
	// No symlink followed on the way or at the name, no FIFO blocking.
	f, err := root.OpenFile(fmt.Sprintf("%s/%s.lock", chainLocksDir, key), unix.O_RDWR|unix.O_CREAT|unix.O_NONBLOCK)
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil
	} else if fi.Mode().Perm() == 0 {
		f.Chmod(0o644) // saferoot creates files mode 0: let others lock it too
	}
	return f
}
