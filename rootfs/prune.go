package rootfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"time"

	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/progress"
)

// PruneOptions configure Prune.
type PruneOptions struct {
	// OlderThan, when above 0, also removes the images (index entries)
	// and cached chains not used for this long (see Hold and the store's
	// use files); 0 removes only what no stored image references.
	OlderThan time.Duration
	// DryRun removes nothing: the result lists what would go.
	DryRun   bool
	Progress progress.Reporter
	// Now is when ages are measured from (zero: the current time).
	Now time.Time
}

// What a PrunedItem is.
const (
	PruneImage = "image" // an index entry; its blobs go as blob items
	PruneBlob  = "blob"
	PruneCache = "cache" // a cached layer chain (see CacheChainDir)
)

// PrunedItem is one thing Prune removed, or would remove.
type PrunedItem struct {
	Kind string `json:"kind"`
	// Name: an image's reference and platform, a blob's digest, a cached
	// chain's chain id.
	Name string `json:"name"`
	// Size: the bytes a blob or a cache entry frees; for an image, the
	// size it records (its blobs, some perhaps shared, are freed as blob
	// items).
	Size     int64     `json:"size"`
	LastUsed time.Time `json:"last_used,omitzero"`
	// Reason: "unreferenced" or "unused since ...".
	Reason string `json:"reason"`
}

// PruneResult is what Prune removed (or, DryRun, would remove).
type PruneResult struct {
	Store   string       `json:"store"`
	DryRun  bool         `json:"dry_run"`
	Removed []PrunedItem `json:"removed"`
	// Freed is the bytes of the blobs and cache entries removed.
	Freed int64 `json:"freed"`
	// Kept counts the images, blobs and cache entries left.
	KeptImages int `json:"kept_images"`
	KeptBlobs  int `json:"kept_blobs"`
	KeptCache  int `json:"kept_cache"`
	// Skipped are entries of the store Prune leaves alone because they are
	// not what nexcage writes there (a symlink, a bad name, a temporary
	// file of a write in progress or interrupted: the store's Check with
	// Repair judges those), each with why.
	Skipped []string `json:"skipped"`
}

// maxPruneDepth bounds nested indexes a stored entry may point through:
// nexcage stores manifests only, other tools an index over them.
const maxPruneDepth = 4

// Prune removes from the store what no stored image needs: blobs that no
// index entry references (through its manifest or index, config and
// layers), cached layer chains no stored image starts with and, with
// OlderThan, the images and cached chains not used for that long. It runs
// holding the store exclusively (see Hold): while a pull or build runs it
// removes nothing and returns ErrStoreInUse. index.json is rewritten
// first and blobs removed after, so a crash at any point leaves a store
// whose images are complete; what is left over goes at the next Prune.
// Nothing is followed through a symlink or removed outside the store;
// entries nexcage does not write are left alone and listed in Skipped.
func (s *Store) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	res := &PruneResult{Store: s.Dir, DryRun: opts.DryRun, Removed: []PrunedItem{}, Skipped: []string{}}
	if !s.Exists() {
		return res, nil
	}
	if !opts.DryRun {
		release, err := s.holdExclusive()
		if err != nil {
			return nil, err
		}
		defer release()
	}
	root, err := saferoot.Open(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("prune the image store: %w", err)
	}
	defer root.Close()
	p := &pruner{s: s, root: root, opts: opts, now: now, res: res, rep: rep}

	// The index under its lock, as pull's record takes it: entries
	// dropped and index rewritten before any blob goes.
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	im, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	kept := p.images(im)
	if !opts.DryRun && len(kept) != len(im.Manifests) {
		im.Manifests = kept
		if err := s.writeIndex(im); err != nil {
			return nil, err
		}
	}
	res.KeptImages = len(kept)
	p.referenced(kept)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.uses(kept)
	if p.unsure != "" {
		rep.Warn("no blob or cached chain was pruned: %s", p.unsure)
	} else {
		if err := p.blobs(ctx); err != nil {
			return nil, err
		}
		if err := p.cache(ctx); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(res.Removed, func(i, j int) bool {
		a, b := res.Removed[i], res.Removed[j]
		if a.Kind != b.Kind {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		return a.Name < b.Name
	})
	return res, nil
}

var kindOrder = map[string]int{PruneImage: 0, PruneCache: 1, PruneBlob: 2}

type pruner struct {
	s    *Store
	root *saferoot.Root
	opts PruneOptions
	now  time.Time
	res  *PruneResult
	rep  progress.Reporter
	// blobs and chains the kept images need.
	blobSet  map[string]bool
	chainSet map[string]bool
	walked   map[string]bool // manifests and indexes read
	// unsure says why the references are not known for certain (an
	// entry's manifest is there but unreadable): then no blob goes.
	unsure string
}

// images keeps the index entries used within OlderThan and lists the
// others as removed.
func (p *pruner) images(im *v1.IndexManifest) []v1.Descriptor {
	if p.opts.OlderThan <= 0 {
		return im.Manifests
	}
	var kept []v1.Descriptor
	for _, d := range im.Manifests {
		last := p.s.lastUse(p.root, d)
		if p.now.Sub(last) <= p.opts.OlderThan {
			kept = append(kept, d)
			continue
		}
		img := imageFromDescriptor(d)
		p.res.Removed = append(p.res.Removed, PrunedItem{Kind: PruneImage, Name: fmt.Sprintf("%s (%s)", img.Ref, img.Platform), Size: img.Size, LastUsed: last, Reason: unusedSince(last)})
	}
	return kept
}

func unusedSince(t time.Time) string {
	if t.IsZero() {
		return "no recorded use"
	}
	return "unused since " + t.UTC().Format(time.RFC3339)
}

// referenced walks the kept entries down to their configs and layers,
// and their configs' diff_ids to the chain ids a cache may hold.
func (p *pruner) referenced(kept []v1.Descriptor) {
	p.blobSet, p.chainSet, p.walked = map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, d := range kept {
		if err := p.walk(d, 0); err != nil && p.unsure == "" {
			p.unsure = fmt.Sprintf("%s: %v: check and repair the store first", entryName(d), err)
		}
	}
}

func (p *pruner) walk(d v1.Descriptor, depth int) error {
	if p.walked[d.Digest.String()] {
		return nil // an index naming one manifest many times costs one read
	}
	p.walked[d.Digest.String()] = true
	p.blobSet[d.Digest.String()] = true
	if depth > maxPruneDepth {
		return fmt.Errorf("indexes nested more than %d deep", maxPruneDepth)
	}
	b, err := p.s.readBlob(digest.Digest(d.Digest.String()), -1, MaxMetadataSize, "the manifest "+d.Digest.String())
	if errors.Is(err, fs.ErrNotExist) {
		// A broken entry (check reports it): nothing it names is known,
		// and it cannot be used before a pull fetches it all again.
		return nil
	}
	if err != nil {
		return err
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("the manifest %s is not JSON", d.Digest)
	}
	if probe.MediaType.IsIndex() || d.MediaType.IsIndex() || (probe.MediaType == "" && probe.Manifests != nil) {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("the index %s: %v", d.Digest, err)
		}
		for _, m := range idx.Manifests {
			if err := p.walk(m, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil || m.Config.Digest.Hex == "" {
		return fmt.Errorf("the manifest %s is not an image manifest", d.Digest)
	}
	p.blobSet[m.Config.Digest.String()] = true
	for _, l := range m.Layers {
		p.blobSet[l.Digest.String()] = true
	}
	if m.Subject != nil {
		p.blobSet[m.Subject.Digest.String()] = true
	}
	cb, err := p.s.readBlob(digest.Digest(m.Config.Digest.String()), -1, MaxMetadataSize, "the config "+m.Config.Digest.String())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []digest.Digest `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return fmt.Errorf("the config %s is not JSON", m.Config.Digest)
	}
	for _, c := range chainIDs(cfg.RootFS.DiffIDs) {
		p.chainSet[c.String()] = true
	}
	return nil
}

// uses removes the use files of entries no longer in the index and the
// builds' chain lock files; they are nexcage's bookkeeping, not listed.
func (p *pruner) uses(kept []v1.Descriptor) {
	if p.opts.DryRun {
		return
	}
	want := map[string]bool{}
	for _, d := range kept {
		img := imageFromDescriptor(d)
		want[useName(img.Ref, img.Platform)] = true
	}
	// The chain locks of builds (chainlock.go): none runs now.
	if locks, err := p.list(chainLocksDir); err == nil {
		for _, e := range locks {
			if e.Type().IsRegular() {
				p.root.RemoveFile(chainLocksDir+"/"+e.Name(), func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG })
			}
		}
	}
	names, err := p.list(usesDir)
	if err != nil {
		return
	}
	for _, e := range names {
		if want[e.Name()] || !e.Type().IsRegular() || atomicfile.IsTemp(e.Name()) {
			continue
		}
		p.root.RemoveFile(usesDir+"/"+e.Name(), func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG })
	}
}

// list reads the directory rel of the store, refusing a symlink anywhere
// on the way (openat2 RESOLVE_NO_SYMLINKS, or one component at a time).
// A missing directory lists nothing.
func (p *pruner) list(rel string) ([]os.DirEntry, error) {
	f, err := p.root.OpenFile(rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		p.skip(rel, "not a directory Prune can read without following a symlink ("+err.Error()+")")
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, err
}

func (p *pruner) skip(rel, why string) {
	p.res.Skipped = append(p.res.Skipped, rel+": "+why)
}

// hexEntries yields the entries of dir (none if it cannot be listed) whose
// names are size bytes in hex, noting the others as skipped (badName says
// what they are not); once ctx ends it yields ctx's error and stops.
func (p *pruner) hexEntries(ctx context.Context, dir string, size int, badName string) iter.Seq2[os.DirEntry, error] {
	return func(yield func(os.DirEntry, error) bool) {
		ents, err := p.list(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			rel := dir + "/" + e.Name()
			switch {
			case atomicfile.IsTemp(e.Name()):
				p.skip(rel, "a temporary file of a write in progress or interrupted (a repair by check removes leftovers)")
			case !validHex(e.Name(), size):
				p.skip(rel, badName)
			default:
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// blobs removes every blob the kept images do not reference.
func (p *pruner) blobs(ctx context.Context) error {
	algs, err := p.list("blobs")
	if err != nil {
		return nil
	}
	for _, a := range algs {
		if !a.IsDir() {
			p.skip("blobs/"+a.Name(), "not a directory of blobs")
			continue
		}
		newHash := checkHashes[a.Name()]
		if newHash == nil {
			p.skip("blobs/"+a.Name(), "not a digest algorithm nexcage knows")
			continue
		}
		dir := "blobs/" + a.Name()
		for e, err := range p.hexEntries(ctx, dir, newHash().Size(), "not a blob name") {
			if err != nil {
				return err
			}
			rel := dir + "/" + e.Name()
			if !e.Type().IsRegular() {
				p.skip(rel, "not a regular file")
				continue
			}
			if p.blobSet[a.Name()+":"+e.Name()] {
				p.res.KeptBlobs++
				continue
			}
			st, err := p.root.Lstat(rel)
			if err != nil {
				continue
			}
			if p.remove(rel, PrunedItem{Kind: PruneBlob, Name: a.Name() + ":" + e.Name(), Size: st.Size, Reason: "unreferenced"}, false) {
				p.res.Freed += st.Size
			}
		}
	}
	return nil
}

// cache removes the cached chains no kept image starts with and, with
// OlderThan, those not used for that long. The cache's layout (see
// docs/architecture.md, "The store"): one directory per chain,
// cache/chains/<64 hex>/, whose manifest.json lists the chain's diff_ids
// ("chain"); the directory's mtime is its last use.
func (p *pruner) cache(ctx context.Context) error {
	for e, err := range p.hexEntries(ctx, pruneChainsDir, sha256.Size, "not a cached chain's name") {
		if err != nil {
			return err
		}
		rel := pruneChainsDir + "/" + e.Name()
		if !e.IsDir() {
			p.skip(rel, "not a directory")
			continue
		}
		st, err := p.root.Lstat(rel)
		if err != nil {
			continue
		}
		last := time.Unix(st.Mtim.Unix())
		item := PrunedItem{Kind: PruneCache, Name: e.Name(), LastUsed: last}
		chain, err := p.s.readCachedChain(p.root, rel)
		switch {
		case err != nil:
			item.Reason = "unreadable (" + err.Error() + ")"
		case !p.chainSet[chainIDs(chain)[len(chain)-1].String()]:
			item.Reason = "unreferenced"
		case p.opts.OlderThan > 0 && p.now.Sub(last) > p.opts.OlderThan:
			item.Reason = unusedSince(last)
		default:
			p.res.KeptCache++
			continue
		}
		item.Size = p.size(rel, st)
		if p.remove(rel, item, true) {
			p.res.Freed += item.Size
		}
	}
	return nil
}

// size is the bytes under rel, a file or a directory of the store (no
// symlink followed: WalkDir does not, and rel's own kind was lstat'ed).
func (p *pruner) size(rel string, st unix.Stat_t) int64 {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return st.Size
	}
	var n int64
	filepath.WalkDir(filepath.Join(p.s.Dir, rel), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// remove deletes rel (a regular file, or with dir a directory tree) from
// the store, unless DryRun, and lists it; it reports whether it is gone
// (or would be).
func (p *pruner) remove(rel string, item PrunedItem, dir bool) bool {
	if !p.opts.DryRun {
		var err error
		if dir {
			err = p.removeTree(rel)
		} else {
			var removed bool
			removed, err = p.root.RemoveFile(rel, func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG })
			if err == nil && !removed {
				err = errors.New("it is no longer a regular file")
			}
		}
		if err != nil {
			p.rep.Warn("prune: could not remove %s: %v", rel, err)
			return false
		}
	}
	p.res.Removed = append(p.res.Removed, item)
	return true
}

// removeTree removes the directory rel of the store (see
// removeStoreTree); rel's own components were opened with no symlink on
// the way just before (list).
func (p *pruner) removeTree(rel string) error {
	return removeStoreTree(p.s.Dir, rel)
}
