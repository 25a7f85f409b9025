package rootfs

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/tartree"
)

// Cached chains: the flattened tree of an image's lowest layers, kept in
// the store so that a later build of any image starting with the same
// layers (another image FROM the same base, or a rebuild after the top
// layer changed) reads only the layers above them, and copies their
// compressed frames instead of compressing them again.
//
// Layout (see docs/architecture.md, "Store"):
//
//	STORE/cache/chains/KEY/manifest.json  what the entry is: chainManifest
//	STORE/cache/chains/KEY/index          the tree and runs, binary (see writeIndex)
//	STORE/cache/chains/KEY/data           file contents and compressed frames
//
// KEY is chainKey: the sha256 of the chain's diff_ids, in order, and of the
// frame settings and mtime clamp the frames were made with. An entry is
// written under a temporary name and renamed into place whole. The store
// is untrusted: loading verifies both files' sizes and digests against the
// manifest and bounds every count and length in the index; an entry that
// fails is removed and rebuilt, never used.

// chainsDir is the cache's directory inside a store.
const chainsDir = "cache/chains"

const chainFormat = "nexcage-chain-1"

// Bounds on what an entry may claim.
const (
	maxManifest   = 1 << 20
	maxIndexBytes = 8 << 30
	maxString     = 1 << 20
	maxXattrs     = 1 << 10
	maxFrameLen   = 2 * zframe.FrameSize
)

// chainManifest is an entry's manifest.json.
type chainManifest struct {
	Format string          `json:"format"`
	Chain  []digest.Digest `json:"chain"`
	// Frames is the zframe.Key the frames were compressed with ("" when
	// none were), Clamp the mtime clamp in Unix seconds (0 = none).
	Frames    string    `json:"frames"`
	Clamp     int64     `json:"clamp"`
	Created   time.Time `json:"created"`
	IndexSize int64     `json:"indexSize"`
	IndexHash string    `json:"indexSha256"`
	DataSize  int64     `json:"dataSize"`
	DataHash  string    `json:"dataSha256"`
	Nodes     int64     `json:"nodes"`
}

// CacheEntry is one cached chain in a store (see Store.CacheEntries).
type CacheEntry struct {
	// Dir is the entry's directory; removing it removes the entry.
	Dir string
	// Chain is the layers' diff_ids, lowest first: the entry serves every
	// image whose config's rootfs.diff_ids start with it.
	Chain   []digest.Digest
	Size    int64
	Created time.Time
	// Err is why the entry is unusable (unreadable manifest), or nil.
	Err error
}

// CacheEntries lists the store's cached chains. Entries whose manifest
// cannot be read are listed with Err set, so that a cleaner can remove
// them; leftover temporary directories are not listed.
func (s *Store) CacheEntries() ([]CacheEntry, error) {
	root := filepath.Join(s.Dir, chainsDir)
	des, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []CacheEntry
	for _, de := range des {
		if !de.IsDir() || atomicfile.IsTemp(de.Name()) {
			continue
		}
		dir := filepath.Join(root, de.Name())
		e := CacheEntry{Dir: dir, Size: atomicfile.TreeSize(dir)}
		m, err := readChainManifest(dir)
		if err != nil {
			e.Err = err
		} else {
			e.Chain, e.Created = m.Chain, m.Created
		}
		out = append(out, e)
	}
	return out, nil
}

// chainKey names the entry for chain under the frame settings and clamp.
func chainKey(chain []digest.Digest, frames string, clamp int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d\n", chainFormat, frames, clamp)
	for _, d := range chain {
		fmt.Fprintf(h, "%s\n", d)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func clampSeconds(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (s *Store) chainDir(chain []digest.Digest, frames string, clamp int64) string {
	return filepath.Join(s.Dir, chainsDir, chainKey(chain, frames, clamp))
}

func readChainManifest(dir string) (*chainManifest, error) {
	f, err := os.Open(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifest {
		return nil, errors.New("the manifest is too large")
	}
	var m chainManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m.Format != chainFormat {
		return nil, fmt.Errorf("unknown format %q", m.Format)
	}
	return &m, nil
}

// cachedChain is a chain loaded from the store.
type cachedChain struct {
	layers    int
	tree      *tartree.Tree
	runs      map[string][]*tartree.Run
	nextInode uint64
	data      *os.File
}

// errBadEntry marks a cache entry that is not what its manifest says.
var errBadEntry = errors.New("corrupt cached chain")

// findChain loads the longest cached chain of diffIDs, or returns nil. An
// entry that fails verification is removed, so that this build writes it
// again.
func (s *Store) findChain(diffIDs []digest.Digest, frames string, clamp int64, budget *entryBudget) *cachedChain {
	for k := len(diffIDs); k >= 1; k-- {
		dir := s.chainDir(diffIDs[:k], frames, clamp)
		if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
			continue
		}
		c, err := loadChain(dir, diffIDs[:k], frames, clamp, budget)
		if err == nil {
			return c
		}
		if errors.Is(err, errBadEntry) {
			os.RemoveAll(dir)
		}
		if budget != nil {
			budget.mu.Lock()
			budget.n = 0
			budget.mu.Unlock()
		}
	}
	return nil
}

func (c *cachedChain) close() {
	if c != nil && c.data != nil {
		c.data.Close()
	}
}

func hashChainFile(f *os.File, size int64) (string, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, size+1))
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("%w: %s is %d bytes, not %d", errBadEntry, f.Name(), n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// loadChain reads and verifies the entry in dir.
func loadChain(dir string, chain []digest.Digest, frames string, clamp int64, budget *entryBudget) (_ *cachedChain, err error) {
	m, err := readChainManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	if m.Frames != frames || m.Clamp != clamp || len(m.Chain) != len(chain) || m.IndexSize < 0 || m.IndexSize > maxIndexBytes || m.DataSize < 0 {
		return nil, fmt.Errorf("%w: the manifest does not describe this chain", errBadEntry)
	}
	for i := range chain {
		if m.Chain[i] != chain[i] {
			return nil, fmt.Errorf("%w: the manifest does not describe this chain", errBadEntry)
		}
	}
	index, err := os.Open(filepath.Join(dir, "index"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	defer index.Close()
	data, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	defer func() {
		if err != nil {
			data.Close()
		}
	}()
	// The data is hashed beside the index's parsing: both are read whole.
	dataHash := make(chan error, 1)
	go func() {
		got, err := hashChainFile(data, m.DataSize)
		if err == nil && got != m.DataHash {
			err = fmt.Errorf("%w: the data does not match its digest", errBadEntry)
		}
		dataHash <- err
	}()
	defer func() {
		if herr := <-dataHash; err == nil && herr != nil {
			err = herr
		}
	}()
	got, err := hashChainFile(index, m.IndexSize)
	if err != nil {
		return nil, err
	}
	if got != m.IndexHash {
		return nil, fmt.Errorf("%w: the index does not match its digest", errBadEntry)
	}
	c := &cachedChain{layers: len(chain), data: data}
	r := &indexReader{r: bufio.NewReaderSize(io.NewSectionReader(index, 0, m.IndexSize), 1<<20), dataSize: m.DataSize}
	if err := r.read(c, data, budget); err != nil {
		return nil, err
	}
	return c, nil
}

// The index: the magic string, then the node count, the nodes in
// tartree.Walk order, the run count, the runs, the next hard link inode
// number. Numbers are varints, strings a length and bytes. A node: path,
// type, mode, uid, gid, size, mtime seconds and nanoseconds, linkname,
// devmajor, devminor, xattr count and pairs, inode, and how its content is
// kept: 0 none, 1 raw at a data offset, 2 frames (key, count, offset and
// length of each). A run: first member's path, member count, headers
// digest, raw length, end, key, frames, source count and the data offset
// of each source (a raw node content).

const (
	contentNone = iota
	contentRaw
	contentFrames
)

type indexWriter struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
}

func (w *indexWriter) int(v int64) {
	w.w.Write(w.buf[:binary.PutVarint(w.buf[:], v)])
}

func (w *indexWriter) uint(v uint64) {
	w.w.Write(w.buf[:binary.PutUvarint(w.buf[:], v)])
}

func (w *indexWriter) str(s string) {
	w.uint(uint64(len(s)))
	w.w.WriteString(s)
}

type indexReader struct {
	r        *bufio.Reader
	err      error
	dataSize int64
}

func (r *indexReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBadEntry, fmt.Sprintf(format, a...))
	}
}

func (r *indexReader) int() int64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(r.r)
	if err != nil {
		r.fail("truncated index")
	}
	return v
}

func (r *indexReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.r)
	if err != nil {
		r.fail("truncated index")
	}
	return v
}

// count reads a count no larger than max.
func (r *indexReader) count(max uint64) int {
	n := r.uint()
	if n > max {
		r.fail("a count of %d", n)
		return 0
	}
	return int(n)
}

func (r *indexReader) str() string {
	n := r.count(maxString)
	if r.err != nil || n == 0 {
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.fail("truncated index")
		return ""
	}
	return string(b)
}

func (r *indexReader) extents() []tartree.Extent {
	n := r.count(1 << 40)
	var out []tartree.Extent
	for range n {
		off, l := r.int(), r.int()
		if r.err != nil {
			return nil
		}
		if off < 0 || l < 0 || l > maxFrameLen || off > r.dataSize-l {
			r.fail("a frame outside the data")
			return nil
		}
		out = append(out, tartree.Extent{Off: off, Len: l})
	}
	return out
}

func (r *indexReader) read(c *cachedChain, data *os.File, budget *entryBudget) error {
	magic := make([]byte, len(chainFormat))
	if _, err := io.ReadFull(r.r, magic); err != nil || string(magic) != chainFormat {
		return fmt.Errorf("%w: not a chain index", errBadEntry)
	}
	nodes := r.count(1 << 40)
	c.tree = tartree.New()
	type dir struct {
		path string
		node *tartree.Node
	}
	var stack []dir
	raw := map[int64]bool{} // data offsets of raw contents, for the runs
	for i := range nodes {
		p := r.str()
		n := &tartree.Node{Type: byte(r.uint()), Mode: r.int(), UID: int(r.int()), GID: int(r.int()), Size: r.int()}
		sec, nsec := r.int(), r.uint()
		if nsec >= 1e9 {
			r.fail("an mtime of %d ns", nsec)
		}
		n.ModTime = time.Unix(sec, int64(nsec))
		n.Linkname, n.Devmajor, n.Devminor = r.str(), r.int(), r.int()
		if nx := r.count(maxXattrs); nx > 0 {
			n.Xattrs = make(map[string]string, nx)
			for range nx {
				k := r.str()
				n.Xattrs[k] = r.str()
			}
		}
		n.Inode = r.uint()
		if n.Size < 0 {
			r.fail("a negative size")
		}
		switch kind := r.uint(); kind {
		case contentNone:
		case contentRaw:
			off, size := r.int(), n.Size
			if off < 0 || off > r.dataSize-size {
				r.fail("content outside the data")
				break
			}
			raw[off] = true
			n.Source = tartree.Section{From: data, Off: off}
			n.Open = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(data, off, size)), nil }
		case contentFrames:
			cmp := &tartree.Compressed{Key: r.str(), From: data}
			cmp.Frames = r.extents()
			if r.err == nil && int64(len(cmp.Frames)) != (n.Size+zframe.Pad(n.Size)+zframe.FrameSize-1)/zframe.FrameSize {
				r.fail("%d frames for %d bytes", len(cmp.Frames), n.Size)
			}
			size := n.Size
			n.Compressed = cmp
			n.Open = func() (io.ReadCloser, error) { return zframe.Open(cmp, size) }
		default:
			r.fail("content kind %d", kind)
		}
		if r.err != nil {
			return r.err
		}
		if (n.Open != nil) != (n.Type == tar.TypeReg) {
			return fmt.Errorf("%w: %s: content for a node of type %q", errBadEntry, p, n.Type)
		}
		if i == 0 {
			if p != "." || n.Type != tar.TypeDir {
				return fmt.Errorf("%w: the first node is not the root", errBadEntry)
			}
			n.ClearChildren()
			c.tree.Root = n
			stack = append(stack, dir{".", n})
			continue
		}
		parent, base := path.Split(p)
		parent = strings.TrimSuffix(parent, "/")
		if parent == "" {
			parent = "."
		}
		if base == "" || base == "." || base == ".." || strings.Contains(p, "//") {
			return fmt.Errorf("%w: a node at %q", errBadEntry, p)
		}
		for len(stack) > 0 && stack[len(stack)-1].path != parent {
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			return fmt.Errorf("%w: %q is out of order", errBadEntry, p)
		}
		if err := budget.add(p); err != nil {
			return err
		}
		stack[len(stack)-1].node.SetChild(base, n)
		if n.Type == tar.TypeDir {
			stack = append(stack, dir{p, n})
		}
	}
	if c.tree.Root == nil || nodes == 0 {
		return fmt.Errorf("%w: no root", errBadEntry)
	}
	c.runs = map[string][]*tartree.Run{}
	for range r.count(1 << 40) {
		first := r.str()
		run := &tartree.Run{Count: r.count(1 << 40)}
		if h := r.str(); len(h) == len(run.Headers) {
			copy(run.Headers[:], h)
		} else {
			r.fail("a headers digest of %d bytes", len(h))
		}
		run.Raw = r.int()
		run.End = tartree.RunEnd(r.uint())
		run.Compressed = tartree.Compressed{Key: r.str(), From: data}
		run.Frames = r.extents()
		for range r.count(1 << 40) {
			off := r.int()
			if r.err == nil && !raw[off] {
				r.fail("a run source that is no file's content")
			}
			run.Sources = append(run.Sources, tartree.Section{From: data, Off: off})
		}
		if r.err == nil && (run.End > tartree.EndOfArchive || run.Raw < 0 || int64(len(run.Frames)) != (run.Raw+zframe.FrameSize-1)/zframe.FrameSize) {
			r.fail("a run of %d bytes in %d frames", run.Raw, len(run.Frames))
		}
		if r.err != nil {
			return r.err
		}
		c.runs[first] = append(c.runs[first], run)
	}
	c.nextInode = r.uint()
	if r.err != nil {
		return r.err
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: data after the index", errBadEntry)
	}
	return nil
}

// hashWriter writes to a buffered file, hashing and counting.
type hashWriter struct {
	w *bufio.Writer
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.h.Write(b[:n])
	w.n += int64(n)
	return n, err
}

// saveChain stores tree, the flattened chain, with runs, the runs of its
// layers, unless the entry exists. Failing to save costs only the reuse.
func (s *Store) saveChain(chain []digest.Digest, frames string, clamp int64, tree *tartree.Tree, runs map[string][]*tartree.Run, nextInode uint64) (err error) {
	target := s.chainDir(chain, frames, clamp)
	if _, err := os.Stat(target); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	tmp, err := atomicfile.TempDir(target)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	indexFile, err := os.Create(filepath.Join(tmp, "index"))
	if err != nil {
		return err
	}
	defer indexFile.Close()
	dataFile, err := os.Create(filepath.Join(tmp, "data"))
	if err != nil {
		return err
	}
	defer dataFile.Close()
	data := &hashWriter{w: bufio.NewWriterSize(dataFile, 1<<20), h: sha256.New()}
	index := &hashWriter{w: bufio.NewWriterSize(indexFile, 1<<20), h: sha256.New()}
	iw := &indexWriter{w: bufio.NewWriterSize(index, 64<<10)}
	iw.w.WriteString(chainFormat)

	var count int64
	tree.Walk(func(string, *tartree.Node) error { count++; return nil })
	iw.uint(uint64(count))
	moved := map[tartree.Section]int64{} // a content's old place → its data offset
	buf := make([]byte, 256<<10)
	err = tree.Walk(func(p string, n *tartree.Node) error {
		iw.str(p)
		iw.uint(uint64(n.Type))
		iw.int(n.Mode)
		iw.int(int64(n.UID))
		iw.int(int64(n.GID))
		iw.int(n.Size)
		iw.int(n.ModTime.Unix())
		iw.uint(uint64(n.ModTime.Nanosecond()))
		iw.str(n.Linkname)
		iw.int(n.Devmajor)
		iw.int(n.Devminor)
		keys := make([]string, 0, len(n.Xattrs))
		for k := range n.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		iw.uint(uint64(len(keys)))
		for _, k := range keys {
			iw.str(k)
			iw.str(n.Xattrs[k])
		}
		iw.uint(n.Inode)
		switch {
		case n.Type != tar.TypeReg:
			iw.uint(contentNone)
		case n.Compressed != nil:
			iw.uint(contentFrames)
			if err := copyFrames(iw, data, n.Compressed); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		default:
			// Only non-empty contents are recorded: an empty file's
			// section is also where the next file's content starts.
			off, ok := moved[n.Source]
			if !ok || n.Size == 0 {
				off = data.n
				rc, err := n.Open()
				if err != nil {
					return err
				}
				w, err := io.CopyBuffer(data, io.LimitReader(rc, n.Size), buf)
				rc.Close()
				if err != nil {
					return err
				}
				if w != n.Size {
					return fmt.Errorf("%s: %d bytes of %d", p, w, n.Size)
				}
				if n.Source.From != nil && n.Size > 0 {
					moved[n.Source] = off
				}
			}
			iw.uint(contentRaw)
			iw.int(off)
		}
		return nil
	})
	if err != nil {
		return err
	}
	firsts := make([]string, 0, len(runs))
	for first := range runs {
		firsts = append(firsts, first)
	}
	sort.Strings(firsts)
	type keptRun struct {
		first string
		run   *tartree.Run
		srcs  []int64
	}
	var kept []keptRun
	for _, first := range firsts {
	runs:
		for _, run := range runs[first] {
			k := keptRun{first: first, run: run}
			for _, src := range run.Sources {
				off, ok := moved[src]
				if !ok {
					continue runs // a member no longer in the tree: never reusable
				}
				k.srcs = append(k.srcs, off)
			}
			kept = append(kept, k)
		}
	}
	iw.uint(uint64(len(kept)))
	for _, k := range kept {
		iw.str(k.first)
		iw.uint(uint64(k.run.Count))
		iw.str(string(k.run.Headers[:]))
		iw.int(k.run.Raw)
		iw.uint(uint64(k.run.End))
		if err := copyFrames(iw, data, &k.run.Compressed); err != nil {
			return err
		}
		iw.uint(uint64(len(k.srcs)))
		for _, off := range k.srcs {
			iw.int(off)
		}
	}
	iw.uint(nextInode)
	if err := iw.w.Flush(); err != nil {
		return err
	}
	if err := index.w.Flush(); err != nil {
		return err
	}
	if err := data.w.Flush(); err != nil {
		return err
	}
	m := chainManifest{
		Format: chainFormat, Chain: chain, Frames: frames, Clamp: clamp, Created: time.Now().UTC(),
		IndexSize: index.n, IndexHash: hex.EncodeToString(index.h.Sum(nil)),
		DataSize: data.n, DataHash: hex.EncodeToString(data.h.Sum(nil)), Nodes: count,
	}
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	// No fsync: a torn entry after a crash fails its digests and is
	// rebuilt, and syncing hundreds of MB would cost the build more than
	// the cache saves it.
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, target); err != nil {
		if _, serr := os.Stat(target); serr == nil {
			os.RemoveAll(tmp) // another build saved it first
			return nil
		}
		return err
	}
	return nil
}

// copyFrames appends c's frames to data and their extents to the index.
func copyFrames(iw *indexWriter, data *hashWriter, c *tartree.Compressed) error {
	iw.str(c.Key)
	iw.uint(uint64(len(c.Frames)))
	for i := range c.Frames {
		b, err := zframe.ReadFrame(c, i)
		if err != nil {
			return err
		}
		off := data.n
		_, err = data.Write(b)
		zframe.Release(b)
		if err != nil {
			return err
		}
		iw.int(off)
		iw.int(data.n - off)
	}
	return nil
}
