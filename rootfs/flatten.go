package rootfs

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/umoci/oci/layer"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/tartree"
)

// FlattenOptions configure Flatten.
type FlattenOptions struct {
	// TempDir holds the decompressed layer contents while the tree is
	// written (default: the system's temporary directory).
	TempDir  string
	Progress progress.Reporter
	// Jobs is how many layers are decompressed at once (default 2).
	Jobs int
	// MaxLayerSize bounds the file content one layer may unpack to
	// (default DefaultMaxLayerSize): a few KiB of gzip, or one sparse
	// entry, can claim terabytes.
	MaxLayerSize int64
	// PrecompressLevel, when not 0, compresses large files' zstd frames
	// (see internal/zframe) at this level while the layers are read, for a
	// zstd template writer to reuse.
	PrecompressLevel int
	// Clamp is the template's mtime clamp (convert.Options'
	// SourceDateEpoch), which runs compressed ahead must apply too.
	Clamp time.Time
	// MaxEntries bounds the members of all the image's layers together
	// (default DefaultMaxEntries): each costs memory until the tree is
	// written.
	MaxEntries int64
	// Cache reuses the flattened lower layers of an earlier build from the
	// store, reading only the layers above them, and keeps this image's
	// lower layers there for later builds (see Store.CacheEntries).
	Cache bool
}

// DefaultMaxLayerSize is far above any real layer.
const DefaultMaxLayerSize = 64 << 30

// ErrTooLarge marks a layer over FlattenOptions.MaxLayerSize.
var ErrTooLarge = errors.New("layer too large")

// Flattened is an image's final rootfs, known from its layers' headers
// alone, with file contents in one spill file per layer.
type Flattened struct {
	Tree *tartree.Tree
	// Spec is the config.json Unpack would write as root.
	Spec  *rspec.Spec
	Image Image

	dir     string
	spills  []*os.File
	maxSize int64
	budget  *entryBudget
	pre     *zframe.Precompressor
	clamp   time.Time

	// The chain cache: the store, the layers loaded from it, and how many
	// lowest layers to save (0: none).
	store  *Store
	base   *cachedChain
	saveAt int
	frames string
	chain  []digest.Digest
	rep    progress.Reporter
	saving *chainSave
	// unlockChain releases the lock of the chain this build saves
	// (chainlock.go), once the entry is in place or given up.
	unlockChain func()
}

// Close removes the spill files, once the lower layers are saved in the
// store's cache (see FlattenOptions.Cache).
func (f *Flattened) Close() error {
	if err := f.saving.wait(); err != nil {
		f.rep.Warn("could not keep the lower layers in the store for later builds: %v", err)
	}
	if f.pre != nil {
		f.pre.Close()
	}
	f.base.close()
	f.releaseChain()
	for _, s := range f.spills {
		if s != nil {
			s.Close()
		}
	}
	return os.RemoveAll(f.dir)
}

// layerEntry is one tar member with where its content went.
type layerEntry struct {
	hdr tar.Header
	src tartree.Section // the content of a regular file: spilled, or in a run
	// compressed is the content's frames, when compressed ahead.
	compressed *tartree.Compressed
}

// Flatten computes the rootfs an unpack of img would produce, without
// writing it: each layer is read once (several at a time), its file
// contents spilled to one temporary file, and its entries applied in order
// with the same whiteout, replacement, hard link and implicit-directory
// rules as the unpacker, and the same refusals of hostile entries. Writing
// the tree gives the same template as unpack followed by convert, byte for
// byte, with a fraction of the I/O and without root.
func (s *Store) Flatten(ctx context.Context, img Image, opts FlattenOptions) (_ *Flattened, err error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	manifest, config, err := s.manifestAndConfig(img)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.TempDir, "nexcage-flatten-")
	if err != nil {
		return nil, fmt.Errorf("create a temporary directory for the layers: %w", err)
	}
	f := &Flattened{Image: img, dir: dir, spills: make([]*os.File, len(manifest.Layers)), maxSize: opts.MaxLayerSize, clamp: opts.Clamp, budget: newEntryBudget(opts.MaxEntries, dir)}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := f.precompress(opts.PrecompressLevel); err != nil {
		return nil, err
	}
	k := f.useCache(ctx, s, opts, config.RootFS.DiffIDs, len(manifest.Layers))

	rep.Step("flattening %s (%d layers)", img.Ref, len(manifest.Layers))
	open := func(_ context.Context, i int) (io.ReadCloser, error) {
		d := manifest.Layers[k+i].Digest
		f, err := s.OpenBlob(d, manifest.Layers[k+i].Size)
		if err != nil {
			return nil, blobMissing(err, "the layer blob", s)
		}
		return f, nil
	}
	entries, err := readLayers(ctx, f, k, manifest.Layers[k:], config.RootFS.DiffIDs[k:], open, opts.Jobs, rep)
	if err != nil {
		return nil, fmt.Errorf("flatten %s: %w", img.Ref, err)
	}
	if err := s.finish(ctx, f, entries, manifest, config); err != nil {
		return nil, err
	}
	return f, nil
}

// finish applies the layers' entries in order and derives config.json.
func (s *Store) finish(ctx context.Context, f *Flattened, layers []layerRead, manifest ispec.Manifest, config ispec.Image) error {
	if f.pre != nil {
		if err := f.pre.Wait(); err != nil {
			return err
		}
	}
	fl := newFlattener()
	runs := map[string][]*tartree.Run{}
	k := 0
	if f.base != nil {
		k = f.base.layers
		fl.tree, fl.nextInode = f.base.tree, f.base.nextInode
		for p, r := range f.base.runs {
			runs[p] = append(runs[p], r...)
		}
	}
	for i, l := range layers {
		for e := range l.entries.all() {
			if err := fl.apply(e); err != nil {
				return fmt.Errorf("flatten %s: layer %d (%s): %w", f.Image.Ref, k+i+1, manifest.Layers[k+i].Digest, err)
			}
		}
		fl.endLayer()
		for p, r := range l.runs {
			runs[p] = append(runs[p], r...)
		}
		if k+i+1 == f.saveAt {
			// Saved now: the layers above change the tree in place.
			var err error
			if f.saving, err = f.store.saveChain(f.chain[:f.saveAt], f.frames, clampSeconds(f.clamp), fl.tree, runs, fl.nextInode); err != nil {
				f.rep.Warn("could not keep the lower layers in the store for later builds: %v", err)
			}
			f.releaseChainWhenSaved()
		}
	}
	f.Tree = fl.tree
	f.Tree.Runs = runs
	var err error
	f.Spec, err = s.runtimeSpec(ctx, f, manifest, config, f.Image)
	return err
}

// PullFlatten pulls ref into the store and flattens it in the same pass:
// each layer is decompressed and read while it downloads, instead of after
// the whole pull. Should the streamed read fail for any reason (a download
// restarted by a retry, say), the layers are read again from the store,
// so the result is always Flatten's.
func (s *Store) PullFlatten(ctx context.Context, ref Ref, popts PullOptions, fopts FlattenOptions) (Image, *Flattened, error) {
	rep := fopts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	dir, err := os.MkdirTemp(fopts.TempDir, "nexcage-flatten-")
	if err != nil {
		return Image{}, nil, fmt.Errorf("create a temporary directory for the layers: %w", err)
	}
	f := &Flattened{dir: dir, maxSize: fopts.MaxLayerSize, clamp: fopts.Clamp, budget: newEntryBudget(fopts.MaxEntries, dir)}
	if err := f.precompress(fopts.PrecompressLevel); err != nil {
		f.Close()
		return Image{}, nil, err
	}

	type plan struct {
		layers []ispec.Descriptor
		config ispec.Image
	}
	planned := make(chan plan, 1)
	var readers []*layerPipe
	var sinks []*teeSink
	popts.onPlan = func(layers []v1.Descriptor, rawConfig []byte) error {
		var p plan
		if err := json.Unmarshal(rawConfig, &p.config); err != nil {
			return fmt.Errorf("the image config of %s is not valid JSON: %w", ref, err)
		}
		if len(p.config.RootFS.DiffIDs) != len(layers) {
			return fmt.Errorf("image %s: the config lists %d diff_ids for %d layers: the image is corrupt", ref, len(p.config.RootFS.DiffIDs), len(layers))
		}
		for _, l := range layers {
			p.layers = append(p.layers, ispec.Descriptor{MediaType: string(l.MediaType), Digest: digest.Digest(l.Digest.String()), Size: l.Size})
			pipe := newLayerPipe()
			readers = append(readers, pipe)
			sinks = append(sinks, newTeeSink(pipe))
		}
		f.spills = make([]*os.File, len(layers))
		planned <- p
		return nil
	}
	popts.tee = func(i int) *teeSink { return sinks[i] }

	type pulled struct {
		img Image
		err error
	}
	done := make(chan pulled, 1)
	go func() {
		img, err := s.Pull(ctx, ref, popts)
		for _, sk := range sinks {
			sk.close(errors.New("the pull ended before this layer was fetched"))
		}
		done <- pulled{img, err}
	}()

	var p plan
	select {
	case p = <-planned:
	case r := <-done:
		os.RemoveAll(dir)
		return Image{}, nil, r.err // the pull failed before any layer
	}
	k := f.useCache(ctx, s, fopts, p.config.RootFS.DiffIDs, len(p.layers))
	for _, r := range readers[:k] {
		r.CloseWithError(errors.New("the layer is cached")) // its download goes on alone
	}
	// A layer's reader starts with its download, and the download keeps
	// its slot until the reader is done (see fetchLayers): only as many
	// layers as download at once hold buffers, whatever the layer count.
	open := func(ctx context.Context, i int) (io.ReadCloser, error) {
		if err := readers[k+i].waitStarted(ctx); err != nil {
			return nil, err
		}
		return readers[k+i], nil
	}
	// Every reader waits at once: a reader waiting for a slot while its
	// download waits for it would deadlock the pull.
	entries, readErr := readLayers(ctx, f, k, p.layers[k:], p.config.RootFS.DiffIDs[k:], open, len(p.layers)-k, progress.Discard)
	if readErr != nil {
		readErr = fmt.Errorf("flatten %s: %w", ref, readErr)
	}
	for _, r := range readers {
		r.CloseWithError(errors.New("the layer reader stopped")) // unblock the pull
	}
	r := <-done
	if r.err != nil {
		f.Close()
		return Image{}, nil, r.err
	}
	f.Image = r.img
	if readErr == nil {
		var manifest ispec.Manifest
		if manifest, readErr = s.ociManifest(r.img.Digest); readErr == nil {
			readErr = s.finish(ctx, f, entries, manifest, p.config)
		}
	}
	if readErr != nil {
		f.Close()
		if ctx.Err() != nil {
			return r.img, nil, ctx.Err()
		}
		// Reading the stored layers again would refuse them again, after
		// as much work.
		if _, over := limits.As(readErr); over || errors.Is(readErr, ErrHostileLayer) {
			return r.img, nil, readErr
		}
		f2, err := s.Flatten(ctx, r.img, fopts)
		return r.img, f2, err
	}
	rep.Step("flattened %s while pulling it", r.img.Ref)
	return r.img, f, nil
}

// useCache loads the longest cached chain of the image's diffIDs when
// opts.Cache is set, and returns how many layers it covers; it also picks
// the chain this build saves: every layer but the top one, which is what
// rebuilds after a change to the top layer and images FROM the same base
// share (all of a one-layer image, itself a base).
//
// A build that will save a chain holds the chain's lock (chainlock.go)
// from before it looks the cache up until the chain is saved: a second
// build of the same chain (another job on the same base) waits, then
// loads what the first saved instead of flattening the same layers again.
func (f *Flattened) useCache(ctx context.Context, s *Store, opts FlattenOptions, diffIDs []digest.Digest, layers int) int {
	if !opts.Cache || len(diffIDs) != layers || layers == 0 {
		return 0
	}
	f.store, f.chain, f.rep = s, diffIDs, opts.Progress
	if f.rep == nil {
		f.rep = progress.Discard
	}
	if f.pre != nil {
		f.frames = zframe.Key(opts.PrecompressLevel)
	}
	save := max(layers-1, 1)
	f.unlockChain = s.lockChain(ctx, chainKey(diffIDs[:save], f.frames, clampSeconds(f.clamp)))
	f.base = s.findChain(diffIDs, f.frames, clampSeconds(f.clamp), f.budget, f.rep)
	k := 0
	if f.base != nil {
		k = f.base.layers
		f.rep.Step("reusing the %d lowest layers flattened by an earlier build", k)
		s.touchChain(chainKey(diffIDs[:k], f.frames, clampSeconds(f.clamp)))
	}
	if save > k {
		f.saveAt = save
	} else {
		f.releaseChain()
	}
	return k
}

// precompress starts compressing large files' frames as layers are read.
func (f *Flattened) precompress(level int) error {
	if level == 0 {
		return nil
	}
	var err error
	f.pre, err = zframe.NewPrecompressor(level, runtime.GOMAXPROCS(0), f.dir)
	return err
}

// layerRead is what reading a layer gives: its entries, to apply in layer
// order afterwards, and the runs compressed ahead, by first member.
type layerRead struct {
	entries entryList
	runs    map[string][]*tartree.Run
}

// entryList holds a layer's entries in fixed-size chunks: a slice grown
// by append would, at a million entries, copy hundreds of MB at each
// doubling and briefly hold both copies.
type entryList struct{ chunks [][]layerEntry }

const entryChunk = 4096

func (l *entryList) add(e layerEntry) {
	if n := len(l.chunks); n == 0 || len(l.chunks[n-1]) == entryChunk {
		l.chunks = append(l.chunks, make([]layerEntry, 0, entryChunk))
	}
	last := &l.chunks[len(l.chunks)-1]
	*last = append(*last, e)
}

func (l *entryList) all() iter.Seq[layerEntry] {
	return func(yield func(layerEntry) bool) {
		for _, c := range l.chunks {
			for _, e := range c {
				if !yield(e) {
					return
				}
			}
		}
	}
}

// readLayers decompresses layers in parallel, spilling file contents and
// collecting headers.
// The layers are the image's from the first on.
func readLayers(ctx context.Context, f *Flattened, first int, layers []ispec.Descriptor, diffIDs []digest.Digest, open func(context.Context, int) (io.ReadCloser, error), jobs int, rep progress.Reporter) ([]layerRead, error) {
	if jobs <= 0 {
		jobs = 2
	}
	out := make([]layerRead, len(layers))
	err := eachLayer(ctx, len(layers), jobs, func(ctx context.Context, i int) error {
		l := layers[i]
		c := rep.Bytes(fmt.Sprintf("layer %d/%d %s", first+i+1, first+len(layers), shortDigest(l.Digest)), l.Size)
		in, err := open(ctx, i)
		var read layerRead
		var spill *os.File
		if err == nil {
			sp := newSpeculator(f.pre, f.clamp, first+i == 0)
			read, spill, err = readLayer(ctx, in, f.dir, first+i, l, diffIDs[i], f.maxSize, f.budget, f.pre, sp, c)
			in.Close()
		}
		f.spills[first+i] = spill
		if err != nil {
			c.Done("failed")
			return fmt.Errorf("layer %d (%s): %w", first+i+1, l.Digest, err)
		}
		c.Done("read")
		out[i] = read
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// layerTar is the tar stream of a layer blob of the media type.
func layerTar(in io.Reader, mediaType string) (io.ReadCloser, error) {
	if strings.HasSuffix(mediaType, "+gzip") {
		// pgzip decompresses ahead in its own goroutine, so inflating
		// overlaps with parsing and spilling.
		zr, err := pgzip.NewReaderN(in, 1<<20, 4)
		if err != nil {
			return nil, errkind.Errorf(errCorruptBlob, "the layer is not valid gzip (%v): the stored blob is corrupt; pull the image again", err)
		}
		return zr, nil
	}
	return decompress(in, mediaType)
}

// admitEntry is a layer member's clean name, once its name, the entry
// budget and its link target allow it.
func admitEntry(hdr *tar.Header, budget *entryBudget) (string, error) {
	clean, err := cleanEntryName(hdr.Name)
	if err != nil {
		return "", err
	}
	if err := budget.add(hdr.Name); err != nil {
		return "", err
	}
	if err := checkLinkTarget(hdr); err != nil {
		return "", err
	}
	return clean, nil
}

// memberDst is where a regular file's content of size goes (room is what
// the layer's size limit has left): a large file compressed ahead is kept
// only compressed (frames), and so is one in a run that keeps what it is
// given; spilled says the content goes to the spill file w.
func memberDst(w io.Writer, pre *zframe.Precompressor, run *zframe.RunWriter, size, room int64) (dst io.Writer, frames *zframe.FileWriter, spilled bool) {
	switch {
	case pre != nil && zframe.OwnFrames(size) && size <= room:
		frames = pre.File(size)
		return frames, frames, false
	case run != nil && run.Holds():
		return run, nil, false
	case run != nil:
		return io.MultiWriter(w, run), nil, true
	}
	return w, nil, true
}

func readLayer(ctx context.Context, blob io.Reader, dir string, i int, d ispec.Descriptor, diffID digest.Digest, limit int64, budget *entryBudget, pre *zframe.Precompressor, sp *speculator, c progress.Counter) (layerRead, *os.File, error) {
	var none layerRead
	if limit <= 0 {
		limit = DefaultMaxLayerSize
	}
	spill, err := os.Create(filepath.Join(dir, fmt.Sprintf("layer-%d", i)))
	if err != nil {
		return none, nil, err
	}
	// A run left open holds a buffer the other layers may be waiting for.
	defer func() {
		if sp != nil {
			sp.abort()
		}
	}()
	in := io.Reader(&progress.Reader{R: bufio.NewReaderSize(blob, 256<<10), C: c})
	raw, err := layerTar(in, d.MediaType)
	if err != nil {
		return none, spill, err
	}
	defer raw.Close()
	digester := digest.SHA256.Digester()
	tr := tar.NewReader(io.TeeReader(raw, digester.Hash()))
	// Hidden behind a plain Writer, the file cannot take over bufio's
	// ReadFrom: it would copy each entry through a fresh 32 KiB buffer
	// and a write(2) per 32 KiB.
	w := bufio.NewWriterSize(struct{ io.Writer }{spill}, 1<<20)
	var offset, content int64
	var out entryList
	copyBuf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return none, spill, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return none, spill, errkind.Errorf(errCorruptBlob, "the layer is not a valid tar stream (%v): the stored blob is corrupt; pull the image again", err)
		}
		clean, err := admitEntry(hdr, budget)
		if err != nil {
			return none, spill, err
		}
		e := layerEntry{hdr: *hdr}
		run, src := sp.member(hdr, clean, tartree.Section{From: spill, Off: offset})
		e.src = src
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA {
			e.hdr.Typeflag = tar.TypeReg
			// A sparse entry claims its size in a few bytes: check the
			// disk can take it before writing any.
			if err := budget.reserve(min(hdr.Size, limit-content+1), hdr.Name); err != nil {
				return none, spill, err
			}
			dst, frames, spilled := memberDst(w, pre, run, hdr.Size, limit-content)
			n, err := io.CopyBuffer(dst, io.LimitReader(tr, limit-content+1), copyBuf)
			if frames != nil {
				// Closed whatever happened: it holds a buffer the other
				// layers' frames need.
				if c := frames.Close(); n == hdr.Size {
					e.compressed = c
				}
			}
			if content+n > limit {
				return none, spill, limits.Errorf(ErrTooLarge, limits.LayerSize, content+n, limit, "the layer unpacks to more than %s of file content (entry %s claims %d bytes): refusing what looks like a decompression bomb", progress.HumanBytes(limit), quoteName(hdr.Name), hdr.Size)
			}
			if err != nil {
				return none, spill, errkind.Errorf(errCorruptBlob, "entry %s: %v: the stored blob is corrupt; pull the image again", quoteName(hdr.Name), err)
			}
			e.hdr.Size = n
			content += n
			if run != nil {
				run.Pad(n)
			}
			if spilled {
				offset += n
			}
		}
		out.add(e)
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(raw, digester.Hash())); err != nil {
		return none, spill, errkind.Errorf(errCorruptBlob, "read the rest of the layer: %v: the stored blob is corrupt; pull the image again", err)
	}
	if got := digester.Digest(); got != diffID {
		return none, spill, errkind.Errorf(ErrDigestMismatch, "the uncompressed layer hashes to %s, but the image config says its diff_id is %s: the stored blob is corrupt; pull the image again", got, diffID)
	}
	if err := w.Flush(); err != nil {
		return none, spill, fmt.Errorf("spill layer contents to %s: %w", dir, err)
	}
	return layerRead{entries: out, runs: sp.finish()}, spill, nil
}

// runtimeSpec generates config.json as Unpack does, from a minimal rootfs
// holding only what umoci reads (/etc/passwd and /etc/group).
func (s *Store) runtimeSpec(ctx context.Context, f *Flattened, m ispec.Manifest, config ispec.Image, img Image) (*rspec.Spec, error) {
	mini := filepath.Join(f.dir, "spec", layer.RootfsName)
	if err := os.MkdirAll(filepath.Join(mini, "etc"), 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"passwd", "group"} {
		b, err := f.Tree.ReadFile("etc/"+name, 16<<20)
		if err != nil {
			continue // umoci copes with their absence
		}
		if err := os.WriteFile(filepath.Join(mini, "etc", name), b, 0o644); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(f.dir, "spec", "config.json")
	if err := s.writeRuntimeConfig(ctx, path, mini, m, layer.MapOptions{}, imageAnnotations(img, config)); err != nil {
		return nil, fmt.Errorf("flatten %s: %w", img.Ref, err)
	}
	return readSpec(path)
}

// flattener applies layer entries to a tree with umoci's semantics.
type flattener struct {
	tree *tartree.Tree
	// upper holds the resolved paths this layer wrote and their ancestors:
	// a whiteout in the same layer must spare them.
	upper map[string]bool
	// cleaned holds the directories a whiteout in this layer has already
	// emptied of everything lower layers put there: anything in them now
	// is this layer's, so another whiteout of them, or of one of their
	// ancestors, need not look inside again. Without it a whiteout
	// repeated N times over N entries costs N².
	cleaned map[string]bool
	// inodes numbers hard link groups.
	nextInode uint64
}

func newFlattener() *flattener {
	t := tartree.New()
	// As Unpack makes the root: 0755, root-owned, mtime 0.
	t.Root.ModTime = time.Unix(0, 0)
	return &flattener{tree: t, upper: map[string]bool{}, cleaned: map[string]bool{}}
}

func (fl *flattener) endLayer() {
	fl.upper = map[string]bool{}
	fl.cleaned = map[string]bool{}
}

var epoch = time.Unix(0, 0)

func (fl *flattener) apply(e layerEntry) error {
	hdr := &e.hdr
	clean, err := cleanEntryName(hdr.Name)
	if err != nil {
		return err
	}
	if err := checkLinkTarget(hdr); err != nil {
		return err
	}
	dirPart, base := filepath.Split(clean)
	if clean == "." {
		dirPart, base = ".", "."
	}
	if t, isWhiteout := strings.CutPrefix(base, ".wh."); isWhiteout {
		if t == "" || t == "." || t == ".." {
			return errkind.Errorf(ErrHostileLayer, "entry %s is a whiteout of %q, which would delete a directory instead of a file in it", quoteName(hdr.Name), t)
		}
		parent, _, err := fl.resolveDir(hdr.Name, dirPart, false)
		if err != nil {
			return err
		}
		if base == ".wh..wh..opq" {
			fl.whiteout(parent, true)
		} else {
			fl.whiteout(join(parent, t), false)
		}
		return nil
	}
	if clean == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errkind.Errorf(ErrHostileLayer, "entry %s would replace the root directory with a non-directory", quoteName(hdr.Name))
		}
		fl.setDirMeta(fl.tree.Root, hdr)
		fl.markUpper(".")
		return nil
	}
	parent, dir, err := fl.resolveDir(hdr.Name, dirPart, true)
	if err != nil {
		return err
	}
	p := join(parent, base)
	existing := dir.Child(base)
	if hdr.Typeflag == tar.TypeDir && existing != nil && existing.Type == tar.TypeDir {
		fl.setDirMeta(existing, hdr) // a directory over a directory keeps its contents
		fl.markUpper(p)
		return nil
	}
	var n *tartree.Node
	switch hdr.Typeflag {
	case tar.TypeLink:
		if n, err = fl.hardlink(hdr); err != nil {
			return err
		}
	case tar.TypeReg:
		n = nodeFor(hdr)
		src, size := e.src, hdr.Size
		n.Size = size
		n.Source = src
		n.Open = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(src.From, src.Off, size)), nil }
		if c := e.compressed; c != nil {
			n.Source = tartree.Section{}
			n.Open = func() (io.ReadCloser, error) { return zframe.Open(c, size) }
			n.Compressed = c
		}
	case tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		n = nodeFor(hdr)
	default:
		return fmt.Errorf("entry %s has tar type %q, which no container rootfs uses", quoteName(hdr.Name), hdr.Typeflag)
	}
	// A replaced path loses what was there, contents too.
	dir.SetChild(base, n)
	fl.markUpper(p)
	return nil
}

// nodeFor makes the node a header describes, with the xattrs a template
// keeps.
func nodeFor(hdr *tar.Header) *tartree.Node {
	n := &tartree.Node{
		Type:     hdr.Typeflag,
		Mode:     hdr.Mode & 0o7777,
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		ModTime:  hdr.ModTime,
		Linkname: hdr.Linkname,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		// Symlinks have no mode of their own and Linux stores no user.*
		// xattrs on them, exactly as they come out of an unpack.
		n.Mode = 0o777
		return n
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		n.Devmajor, n.Devminor = 0, 0
	}
	n.Xattrs = templateXattrs(hdr)
	return n
}

func (fl *flattener) setDirMeta(n *tartree.Node, hdr *tar.Header) {
	n.Mode, n.UID, n.GID, n.ModTime = hdr.Mode&0o7777, hdr.Uid, hdr.Gid, hdr.ModTime
	n.Xattrs = templateXattrs(hdr)
}

// templateXattrs keeps what PVE's extraction keeps: user.* (except the
// rootless bookkeeping) and security.capability.
func templateXattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !(name == "security.capability" || (strings.HasPrefix(name, "user.") && name != "user.rootlesscontainers")) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out
}

// hardlink makes a node sharing the target's inode. link(2) copies no
// metadata from the header, and umoci applies none.
func (fl *flattener) hardlink(hdr *tar.Header) (*tartree.Node, error) {
	target, err := cleanEntryName(hdr.Linkname)
	if err != nil {
		return nil, errkind.Errorf(ErrHostileLayer, "hard link %s -> %s points outside the root", quoteName(hdr.Name), quoteName(hdr.Linkname))
	}
	tdir, tbase := filepath.Split(target)
	_, dir, err := fl.resolveDir(hdr.Name, tdir, false)
	if err != nil {
		return nil, err
	}
	t := dir.Child(tbase)
	if t == nil {
		return nil, fmt.Errorf("hard link %s -> %s: the target does not exist", quoteName(hdr.Name), quoteName(hdr.Linkname))
	}
	if t.Type == tar.TypeDir {
		return nil, fmt.Errorf("hard link %s -> %s: the target is a directory", quoteName(hdr.Name), quoteName(hdr.Linkname))
	}
	n := *t
	// Symlinks are linked too: the layer made one inode, umoci keeps it,
	// and GNU tar of the unpacked rootfs (PVE's reference) links them.
	if t.Type == tar.TypeReg || t.Type == tar.TypeSymlink {
		if t.Inode == 0 {
			fl.nextInode++
			t.Inode = fl.nextInode
		}
		n.Inode = t.Inode
	}
	return &n, nil
}

// resolveDir resolves a directory path as umoci's SecureJoin does:
// symlinks followed inside the root, missing components (and non-
// directories in the way, when create) made into directories. Relative
// symlinks climbing above the root are refused, as Unpack refuses them.
// It returns the resolved path and its node (nil when it is missing and
// not create).
//
// saferoot.Resolve walks the tree node by node (one lookup in the
// parent's entries per component, not a walk from the root) and bounds
// the resolved path by PATH_MAX and the links followed by Linux's 40: a
// symlink of thousands of components, or a chain of them, costs what the
// kernel would let it cost.
func (fl *flattener) resolveDir(entry, rel string, create bool) (string, *tartree.Node, error) {
	o := saferoot.Options[*tartree.Node]{Missing: func(*tartree.Node, string) (*tartree.Node, error) { return nil, nil }}
	if create {
		// Missing, or a non-directory umoci's mkdirAll removes: an
		// implicit directory with fixed metadata (see normalise).
		o.Missing = func(dir *tartree.Node, name string) (*tartree.Node, error) {
			n := &tartree.Node{Type: tar.TypeDir, Mode: 0o755, ModTime: epoch}
			dir.SetChild(name, n)
			return n, nil
		}
	}
	resolved, n, err := saferoot.Resolve(rel, saferoot.Walker[*tartree.Node](dirWalker{fl.tree}), o)
	return resolved, n, entryResolveError(entry, err)
}

// dirWalker is the tree as resolveDir sees it: a non-directory in the way
// is replaced (or, without create, leads nowhere), as if missing.
type dirWalker struct{ t *tartree.Tree }

func (w dirWalker) Root() *tartree.Node { return w.t.Root }

func (dirWalker) Child(dir *tartree.Node, name string) (*tartree.Node, saferoot.Kind, string, error) {
	n := dir.Child(name)
	switch {
	case n != nil && n.Type == tar.TypeSymlink:
		return n, saferoot.Symlink, n.Linkname, nil
	case n != nil && n.Type == tar.TypeDir:
		return n, saferoot.Dir, "", nil
	}
	// Nothing there, or a non-directory in the way.
	return n, saferoot.Missing, "", nil
}

// whiteout removes p unless this layer wrote it; a directory this layer
// wrote keeps only its entries from this layer. opaque spares p itself.
func (fl *flattener) whiteout(p string, opaque bool) {
	n := fl.tree.Get(p)
	if n == nil {
		return
	}
	if !fl.upper[p] && !opaque {
		fl.tree.Remove(p)
		return
	}
	if n.Type != tar.TypeDir || fl.cleaned[p] {
		return
	}
	fl.cleaned[p] = true
	for _, name := range n.Children() {
		fl.whiteout(join(p, name), false)
	}
}

// markUpper marks p and its ancestors; an upper path's ancestors are
// upper already, so each path is marked once per layer.
func (fl *flattener) markUpper(p string) {
	for !fl.upper[p] {
		fl.upper[p] = true
		if p == "." {
			return
		}
		p = filepath.Dir(p)
	}
}

func join(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

func readSpec(path string) (*rspec.Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec rspec.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("read back %s: %w", path, err)
	}
	return &spec, nil
}

// releaseChain releases the chain lock useCache took, once.
func (f *Flattened) releaseChain() {
	if f.unlockChain != nil {
		f.unlockChain()
		f.unlockChain = nil
	}
}

// releaseChainWhenSaved releases the chain lock as soon as the entry being
// saved is in place (its data is copied in the background while the
// template is written), so a build waiting for the chain loads it then,
// not after this build's whole template.
func (f *Flattened) releaseChainWhenSaved() {
	if f.saving == nil || f.unlockChain == nil {
		f.releaseChain()
		return
	}
	unlock, saved := f.unlockChain, f.saving.done
	f.unlockChain = nil
	relay := make(chan error, 1)
	go func() {
		err := <-saved
		unlock()
		relay <- err
	}()
	f.saving = &chainSave{done: relay}
}
