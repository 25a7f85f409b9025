package rootfs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/tartree"
)

// savedChain pulls the corpus "runs" case (a base layer in archive order
// and an upper layer) and builds it once with the cache, which keeps its
// base layer; it returns the store, the image and the entry's directory.
func savedChain(t *testing.T) (*Store, Image, string) {
	t.Helper()
	s := newStore(t)
	img := pullCase(t, s, corpusCase(t, "runs"))
	f, err := s.Flatten(context.Background(), img, FlattenOptions{PrecompressLevel: 3, Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := s.CacheEntries()
	if err != nil || len(entries) != 1 || entries[0].Err != nil {
		t.Fatalf("entries %+v, %v: want one good entry", entries, err)
	}
	return s, img, entries[0].Dir
}

// TestChainIndexMutationsRefused: an index altered in any byte, or cut
// anywhere, whose manifest is made to match it (as a hostile store
// would), never crashes the loader nor makes it allocate what the index
// claims: it loads, or it is refused as a corrupt entry.
func TestChainIndexMutationsRefused(t *testing.T) {
	testenv.CheckLeaks(t)
	s, img, dir := savedChain(t)
	m, err := readChainManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, config, err := s.manifestAndConfig(img)
	if err != nil {
		t.Fatal(err)
	}
	chain := config.RootFS.DiffIDs[:len(m.Chain)]
	good, err := os.ReadFile(filepath.Join(dir, "index"))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Close()
	rng := rand.New(rand.NewSource(1))
	refused := 0
	for i := range 400 {
		b := append([]byte(nil), good...)
		switch i % 3 {
		case 0:
			b[rng.Intn(len(b))] ^= byte(1 + rng.Intn(255))
		case 1:
			b = b[:rng.Intn(len(b))]
		case 2: // a huge varint where a count or length may be
			at := rng.Intn(len(b) - 10)
			copy(b[at:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
		}
		if err := os.WriteFile(filepath.Join(dir, "index"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		m.IndexSize, m.IndexHash = int64(len(b)), hex.EncodeToString(sum[:])
		mb, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), mb, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := loadChain(cr, filepath.Base(dir), chain, m.Frames, m.Clamp, newEntryBudget(0, dir))
		if err != nil {
			refused++
			continue
		}
		c.close()
	}
	if refused < 300 {
		t.Errorf("only %d of 400 damaged indexes were refused", refused)
	}
}

// TestCacheEntries lists entries with their chain, an entry whose
// manifest is unreadable with its error, and no temporary directory.
func TestCacheEntries(t *testing.T) {
	s, img, dir := savedChain(t)
	_, config, err := s.manifestAndConfig(img)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(filepath.Dir(dir), "bad")
	if err := os.MkdirAll(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(filepath.Dir(dir), ".x.nexcage-tmp-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := s.CacheEntries()
	if err != nil || len(entries) != 2 {
		t.Fatalf("%d entries, %v; want 2", len(entries), err)
	}
	for _, e := range entries {
		switch e.Dir {
		case dir:
			if e.Err != nil || len(e.Chain) != 1 || e.Chain[0] != config.RootFS.DiffIDs[0] || e.Size <= 0 || e.Created.IsZero() {
				t.Errorf("good entry: %+v", e)
			}
		case bad:
			if e.Err == nil {
				t.Error("the entry without a manifest has no error")
			}
		default:
			t.Errorf("unexpected entry %s", e.Dir)
		}
	}
}

// TestChainLocOverflowRefused: a location in a run whose offset plus size
// wraps past MaxInt64 is a corrupt entry, not an end that passes the
// run-length check as a negative number.
func TestChainLocOverflowRefused(t *testing.T) {
	var b []byte
	b = binary.AppendUvarint(b, 0)               // run 0
	b = binary.AppendVarint(b, math.MaxInt64-10) // offset
	c := &cachedChain{readers: make([]*zframe.RunReader, 1)}
	r := &indexReader{r: bufio.NewReader(bytes.NewReader(b)), dataSize: 1 << 20, indexSize: int64(len(b))}
	if _, ok := r.loc(contentRun, 100, c, nil); ok || !errors.Is(r.err, errBadEntry) {
		t.Fatalf("offset MaxInt64-10 of 100 bytes: ok %v, err %v, checks %+v; want errBadEntry", ok, r.err, c.checks)
	}
}

// TestChainCacheOnlyWhenOthersCannotWrite: an entry vouches only for
// itself, so a cache whose directories someone else could write (group-
// or other-writable, another owner, a symlink) is neither read nor
// written, and the build says so once.
func TestChainCacheOnlyWhenOthersCannotWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(s *Store) error
	}{
		{"good", func(*Store) error { return nil }},
		{"chains group-writable", func(s *Store) error { return os.Chmod(filepath.Join(s.Dir, chainsDir), 0o775) }},
		{"cache other-writable", func(s *Store) error { return os.Chmod(filepath.Join(s.Dir, "cache"), 0o757) }},
		{"store group-writable", func(s *Store) error { return os.Chmod(s.Dir, 0o770) }},
		{"chains owned by another uid", func(s *Store) error {
			testenv.RequireRoot(t)
			return os.Chown(filepath.Join(s.Dir, chainsDir), 4321, 4321)
		}},
		{"cache a symlink", func(s *Store) error {
			c := filepath.Join(s.Dir, "cache")
			if err := os.Rename(c, c+"2"); err != nil {
				return err
			}
			return os.Symlink("cache2", c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, img, dir := savedChain(t)
			if err := tc.spoil(s); err != nil {
				t.Fatal(err)
			}
			rec := progress.Record(progress.Discard)
			f, err := s.Flatten(context.Background(), img, FlattenOptions{PrecompressLevel: 3, Cache: true, Progress: rec})
			if err != nil {
				t.Fatal(err)
			}
			used := f.base != nil
			f.Close()
			warned := 0
			for _, w := range rec.Warnings() {
				if strings.Contains(w, "cache") {
					warned++
				}
			}
			if tc.name == "good" {
				if !used || warned != 0 {
					t.Fatalf("a store only this user can write: cache used %v, warnings %q", used, rec.Warnings())
				}
				return
			}
			if used || warned != 1 {
				t.Fatalf("cache used %v, warnings %q: want not used, one warning", used, rec.Warnings())
			}
			if _, err := os.Stat(dir); err != nil && tc.name != "cache a symlink" {
				t.Errorf("the entry was touched: %v", err)
			}
		})
	}
}

// gatedReader blocks reads until open is closed: it holds saveChain's
// background copy between its checks and its writes.
type gatedReader struct{ open chan struct{} }

func (g gatedReader) ReadAt(b []byte, off int64) (int, error) {
	<-g.open
	for i := range b {
		b[i] = 'x'
	}
	return len(b), nil
}

// TestChainSaveStaysInStore: cache/chains swapped for a symlink to a
// directory outside the store while an entry is being written does not
// send the entry's files, nor its final rename, there: the cache is
// written through a root opened once.
func TestChainSaveStaysInStore(t *testing.T) {
	s := newStore(t)
	outside := t.TempDir()
	tree := tartree.New()
	g := gatedReader{make(chan struct{})}
	tree.Root.SetChild("f", &tartree.Node{Type: tar.TypeReg, Mode: 0o644, Size: 10, Source: tartree.Section{From: g}})
	chain := []digest.Digest{digest.FromString("layer")}
	cs, err := s.saveChain(chain, "", 0, tree, nil, 1)
	if err != nil || cs == nil {
		close(g.open)
		t.Fatalf("saveChain: %v, %v", cs, err)
	}
	chains := filepath.Join(s.Dir, chainsDir)
	des, err := os.ReadDir(chains)
	if err != nil || len(des) != 1 {
		close(g.open)
		t.Fatalf("chains holds %v, %v: want the temporary entry", des, err)
	}
	// The swap: the same names, outside the store.
	if err := os.Mkdir(filepath.Join(outside, des[0].Name()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(chains, chains+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, chains); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := cs.wait(); err != nil {
		t.Fatalf("the save: %v", err)
	}
	key := chainKey(chain, "", 0)
	if got, _ := os.ReadDir(outside); len(got) != 1 || got[0].Name() != des[0].Name() {
		t.Errorf("outside the store: %v; want only what the test made", got)
	}
	if _, err := readChainManifest(filepath.Join(chains+".real", key)); err != nil {
		t.Errorf("the entry is not where the save began: %v", err)
	}
}

// TestChainLoadRefusesNodesNoLayerMakes: the template writer takes a
// loaded tree as it is, so a node the flattener never makes (a tar type
// no rootfs uses, device numbers on a file, a directory in a hard link
// group, a mode beyond 07777) makes the entry corrupt.
func TestChainLoadRefusesNodesNoLayerMakes(t *testing.T) {
	for i, bad := range []*tartree.Node{
		{Type: tar.TypeLink, Mode: 0o644},
		{Type: 'x', Mode: 0o644},
		{Type: tar.TypeSymlink, Mode: 0o777, Linkname: "a", Devmajor: 1, Devminor: 3},
		{Type: tar.TypeDir, Mode: 0o755, Inode: 1},
		{Type: tar.TypeFifo, Mode: 0o10644},
	} {
		s := newStore(t)
		tree := tartree.New()
		tree.Root.SetChild("bad", bad)
		chain := []digest.Digest{digest.FromString("layer")}
		cs, err := s.saveChain(chain, "", 0, tree, nil, 2)
		if err != nil || cs == nil {
			t.Fatalf("saveChain: %v, %v", cs, err)
		}
		if err := cs.wait(); err != nil {
			t.Fatal(err)
		}
		cr, err := s.openChains(false)
		if err != nil || cr == nil {
			t.Fatalf("openChains: %v", err)
		}
		c, err := loadChain(cr, chainKey(chain, "", 0), chain, "", 0, newEntryBudget(0, t.TempDir()))
		cr.Close()
		if !errors.Is(err, errBadEntry) {
			c.close()
			t.Errorf("%d: node %+v: loaded (%v), want errBadEntry", i, bad, err)
		}
	}
}

// TestChainCacheStoreNotYetMade: a build whose store is made later (a
// pull into a new store) finds nothing cached and has nothing to warn of.
func TestChainCacheStoreNotYetMade(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "store")}
	rec := progress.Record(progress.Discard)
	if c := s.findChain([]digest.Digest{digest.FromString("layer")}, "", 0, nil, rec); c != nil || len(rec.Warnings()) != 0 {
		t.Fatalf("found %v, warnings %q: want nothing", c, rec.Warnings())
	}
}
