package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/saferoot"
)

// What a store records of its use, for Prune (see docs/architecture.md,
// "The store"):
//
//   - STORE/uses/<hex>: one empty file per index entry, hex the sha256 of
//     "REFERENCE\x00PLATFORM"; its mtime is the entry's last use (Find,
//     Lookup, Get, Pull). Touching a file is one utimensat, so a crash
//     leaves the old time or the new one, never a damaged store: no
//     index.json rewrite (and no lock) on every build. Without the file
//     (a store from before, a read-only store) the pull time counts.
//   - STORE/.nexcage.use: flocked shared by every pull and build for
//     its whole run, exclusively by Prune, so Prune never removes a blob
//     a running pull has just written or a running build is reading.
const (
	usesDir     = "uses"
	useLockName = ".nexcage.use"
)

// useName is the name of an index entry's use file under uses/.
func useName(ref, platform string) string {
	sum := sha256.Sum256([]byte(ref + "\x00" + platform))
	return hex.EncodeToString(sum[:])
}

// touchUse records that the entry (ref, platform) is used now. It is best
// effort: a store this user cannot write still serves its images, and
// Prune then judges by the pull time.
func (s *Store) touchUse(ref, platform string) {
	root, err := saferoot.Open(s.Dir)
	if err != nil {
		return
	}
	defer root.Close()
	if err := root.Mkdir(usesDir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return
	}
	p := usesDir + "/" + useName(ref, platform)
	// No symlink followed anywhere on the way, no FIFO blocking the open:
	// the store is not trusted.
	f, err := root.OpenFile(p, unix.O_WRONLY|unix.O_CREAT|unix.O_NONBLOCK)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	} else if fi.Mode().Perm() == 0 {
		f.Chmod(0o644) // saferoot creates files mode 0: reopened next time
	}
	// utimensat(fd, NULL, NULL): futimens to now on the descriptor just
	// checked, not on the name again.
	unix.Syscall6(unix.SYS_UTIMENSAT, f.Fd(), 0, 0, 0, 0, 0)
}

// lastUse is when an index entry was last used: its use file's mtime,
// or its pull time when later or when there is no use file.
func (s *Store) lastUse(root *saferoot.Root, d v1.Descriptor) time.Time {
	img := imageFromDescriptor(d)
	t := img.Pulled
	st, err := root.Lstat(usesDir + "/" + useName(img.Ref, img.Platform))
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		if m := time.Unix(st.Mtim.Unix()); m.After(t) {
			t = m
		}
	}
	return t
}

// ErrStoreInUse means a pull or build is running on the store, so Prune
// removed nothing: run it again once they end.
var ErrStoreInUse = errors.New("the image store is in use")

// Hold marks the store in use until release is called: Prune refuses to
// run meanwhile. Pull holds the store for its whole run; a program that
// looks an image up and then reads its blobs (Flatten, Unpack, Export)
// holds it around both, as pipeline.Build does. A store that does not
// exist yet, or that this user cannot write, is not held (nothing can be
// pruned from it by this user either).
func (s *Store) Hold() (release func(), err error) {
	f, err := s.openLockFile(useLockName, !s.Exists())
	if f == nil {
		return func() {}, err
	}
	return s.flock(f, syscall.LOCK_SH)
}

// holdExclusive is Prune's side of Hold: it fails at once with
// ErrStoreInUse while anything holds the store.
func (s *Store) holdExclusive() (func(), error) {
	f, err := s.openLockFile(useLockName, false)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("lock the image store %s: cannot create %s", s.Dir, useLockName)
	}
	release, err := s.flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("%w: a pull or build is running on %s; nothing was removed", ErrStoreInUse, s.Dir)
	}
	return release, err
}

// flock takes the lock how on f, an open lock file of the store, closing
// f if it cannot; release unlocks and closes it.
func (s *Store) flock(f *os.File, how int) (release func(), err error) {
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the image store %s: %w", s.Dir, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// openLockFile opens (creating) the lock file name in the store, refusing
// a symlink or anything but a regular file there. A store that is absent
// (or read-only without the file) gives (nil, nil): there is nothing to
// lock.
func (s *Store) openLockFile(name string, absent bool) (*os.File, error) {
	if absent {
		return nil, nil
	}
	p := filepath.Join(s.Dir, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("lock the image store %s: %s is a symlink, not a lock file: remove it", s.Dir, p)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS):
		// Read-only to us: open it for reading if it is there (flock
		// needs no write access), else hold nothing.
		if f, err = os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0); err != nil {
			return nil, nil
		}
	case errors.Is(err, os.ErrNotExist):
		return nil, nil // the store directory itself is gone
	case err != nil:
		return nil, fmt.Errorf("lock the image store %s: %w", s.Dir, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("lock the image store %s: %s is not a regular file: remove it", s.Dir, p)
	}
	return f, nil
}

// chainIDs are the OCI chain ids of an image's layer chains 1..k for every
// k: the first diff_id, then sha256("PREVIOUS DIFFID") down the layers
// (image-spec, config.md): one name for "the first k layers".
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, 0, len(diffIDs))
	var prev digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			prev = d
		} else {
			prev = digest.FromString(prev.String() + " " + d.String())
		}
		out = append(out, prev)
	}
	return out
}

// pruneChainsDir holds the store's cached layer chains: one directory per
// chain, named by 64 hex digits, written under a temporary name and
// renamed into place whole, with a manifest.json whose "chain" lists the
// chain's diff_ids, lowest first; the directory's mtime is the entry's
// last use. Prune and Check read no more of an entry than that (and
// Check the sizes and sha256 sums the manifest records for its files).
const pruneChainsDir = "cache/chains"

// maxChainManifest bounds a cached chain's manifest.json.
const maxChainManifest = 1 << 20

// cachedChainManifest is what Prune and Check read of a cached chain's
// manifest.json.
type cachedChainManifest struct {
	Chain     []digest.Digest `json:"chain"`
	IndexSize int64           `json:"indexSize"`
	IndexHash string          `json:"indexSha256"`
	DataSize  int64           `json:"dataSize"`
	DataHash  string          `json:"dataSha256"`
}

// readCachedChainManifest reads rel/manifest.json of the store, no symlink
// followed, bounded.
func (s *Store) readCachedChainManifest(root *saferoot.Root, rel string) (*cachedChainManifest, error) {
	f, _, err := root.OpenRegular(rel + "/manifest.json")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := limits.ReadAll(f, maxChainManifest, "the cached chain manifest "+rel)
	if err != nil {
		return nil, err
	}
	var m cachedChainManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest.json is not valid JSON: %v", err)
	}
	if len(m.Chain) == 0 {
		return nil, errors.New("manifest.json names no layer chain")
	}
	for _, d := range m.Chain {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("manifest.json: %v", err)
		}
	}
	return &m, nil
}

// readCachedChain is the diff_ids of the cached chain at rel.
func (s *Store) readCachedChain(root *saferoot.Root, rel string) ([]digest.Digest, error) {
	m, err := s.readCachedChainManifest(root, rel)
	if err != nil {
		return nil, err
	}
	return m.Chain, nil
}

// touchChain records a use of the cached chain key: its directory's mtime,
// which Prune's OlderThan reads. Best effort, no symlink followed.
func (s *Store) touchChain(key string) {
	root, err := saferoot.Open(s.Dir)
	if err != nil {
		return
	}
	defer root.Close()
	now := unix.NsecToTimespec(time.Now().UnixNano())
	root.Utimes(pruneChainsDir+"/"+key, []unix.Timespec{now, now})
}
