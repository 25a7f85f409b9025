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
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/progress"
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
// written under a temporary name and renamed into place whole. An entry
// vouches only for itself, so the cache is used only when no other user
// can write its directories (openChains), and then only through a root
// opened once. Even so, loading verifies both files' sizes and digests
// against the manifest, bounds every count, length and offset in the
// index and holds each node to what the flattener makes; an entry that
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

// openChains opens cache/chains as an os.Root, or returns nil, nil when
// it is absent and create is false (create makes cache/ and cache/chains).
// Every later use of the cache goes through the root, so a directory
// swapped for a symlink after the checks cannot send a write, a rename or
// a removal outside the store.
//
// An entry vouches only for itself: its digests are in its own manifest,
// written by whoever can write the cache, and nothing ties its tree to
// the layers' diff_ids. So the cache is read and written only when no one
// but this user can write its directories: the store directory, cache/
// and cache/chains must each be a directory, not a symlink, owned by the
// effective uid and not writable by its group or others. Each is checked
// as opened (the descriptor's own stat), not by path.
func (s *Store) openChains(create bool) (*os.Root, error) {
	lfi, err := os.Lstat(s.Dir)
	if errors.Is(err, fs.ErrNotExist) && !create {
		return nil, nil // a store made later in this build: nothing cached
	}
	if err != nil {
		return nil, err
	}
	if !lfi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", s.Dir)
	}
	r, err := os.OpenRoot(s.Dir)
	if err != nil {
		return nil, err
	}
	p := s.Dir
	for _, name := range []string{"", "cache", "chains"} {
		if name != "" {
			p = filepath.Join(p, name)
			if create {
				if err := r.Mkdir(name, 0o755); err == nil {
					err = r.Chmod(name, 0o755) // whatever the umask
				} else if !errors.Is(err, fs.ErrExist) {
					r.Close()
					return nil, err
				}
			}
			if lfi, err = r.Lstat(name); err != nil {
				r.Close()
				if errors.Is(err, fs.ErrNotExist) && !create {
					return nil, nil
				}
				return nil, err
			}
			if !lfi.IsDir() {
				r.Close()
				return nil, fmt.Errorf("%s is not a directory", p)
			}
			sub, err := r.OpenRoot(name)
			r.Close()
			if err != nil {
				return nil, err
			}
			r = sub
		}
		fi, err := r.Stat(".")
		if err == nil && !os.SameFile(fi, lfi) {
			err = fmt.Errorf("%s changed while being opened", p)
		}
		if err == nil {
			err = trustedDir(p, fi)
		}
		if err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func trustedDir(p string, fi fs.FileInfo) error {
	euid := os.Geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != euid {
		return fmt.Errorf("%s is not owned by uid %d", p, euid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by its group or others", p)
	}
	return nil
}

// tempDirIn makes a temporary directory beside target in cr, named as
// atomicfile.TempDir names them (so that listings and prune skip it).
func tempDirIn(cr *os.Root, target string) (string, error) {
	for {
		name := "." + target + atomicfile.TempMarker + strconv.FormatUint(rand.Uint64(), 36)
		err := cr.Mkdir(name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
}

func readChainManifest(dir string) (*chainManifest, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readChainManifestIn(r, ".")
}

// readChainManifestIn reads the manifest of the entry key of cr.
func readChainManifestIn(cr *os.Root, key string) (*chainManifest, error) {
	f, err := openEntryFile(cr, path.Join(key, "manifest.json"))
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
	dec     *zframe.Decoder
	readers []*zframe.RunReader // one per run, for the content kept in them
	checks  []runCheck

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
// again. A cache others could write is not used (chainsTrusted): rep is
// told why.
func (s *Store) findChain(diffIDs []digest.Digest, frames string, clamp int64, budget *entryBudget, rep progress.Reporter) *cachedChain {
	cr, err := s.openChains(false)
	if err != nil {
		rep.Warn("not using the store's cache of flattened layers: %v", err)
		return nil
	}
	if cr == nil {
		return nil
	}
	defer cr.Close()
	for k := len(diffIDs); k >= 1; k-- {
		key := chainKey(diffIDs[:k], frames, clamp)
		if fi, err := cr.Lstat(key); err != nil || !fi.IsDir() {
			continue
		}
		c, err := loadChain(cr, key, diffIDs[:k], frames, clamp, budget)
		if err == nil {
			return c
		}
		if errors.Is(err, errBadEntry) {
			cr.RemoveAll(key)
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
	if c == nil {
		return
	}
	if c.dec != nil {
		c.dec.Close()
	}
	if c.data != nil {
		c.data.Close()
	}
}

// openEntryFile opens a file of an entry without following a symlink or
// waiting for a FIFO's writer.
func openEntryFile(cr *os.Root, p string) (*os.File, error) {
	f, err := cr.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	return f, nil
}

// hashChainFile hashes f, which must be a regular file of size bytes: a
// device or a FIFO in its place would be read for as long as it claims.
func hashChainFile(f *os.File, size int64) (string, error) {
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return "", fmt.Errorf("%w: %s is not a regular file of %d bytes", errBadEntry, f.Name(), size)
	}
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

// loadChain reads and verifies the entry key of cr.
func loadChain(cr *os.Root, key string, chain []digest.Digest, frames string, clamp int64, budget *entryBudget) (_ *cachedChain, err error) {
	m, err := readChainManifestIn(cr, key)
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
	index, err := openEntryFile(cr, path.Join(key, "index"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	defer index.Close()
	data, err := openEntryFile(cr, path.Join(key, "data"))
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
	r := &indexReader{r: bufio.NewReaderSize(io.NewSectionReader(index, 0, m.IndexSize), 1<<20), dataSize: m.DataSize, indexSize: m.IndexSize}
	if err := r.read(c, data, budget); err != nil {
		return nil, err
	}
	return c, nil
}

// The index: the magic string, the run count, the node count, the nodes
// in tartree.Walk order, the runs, the next hard link inode number.
// Numbers are varints, strings a length and bytes. A node: path, type,
// mode, uid, gid, size, mtime seconds and nanoseconds, linkname, devmajor,
// devminor, xattr count and pairs, inode, and where its content is (a
// location, or its frames: key, count, offset and length of each). A run:
// first member's path, member count, headers digest, raw length, end,
// key, frames, and the location of each source. A location is 0 (none),
// 1 and a data offset (raw bytes), or 3, a run number and an offset in
// the run's archive bytes (content kept only in a run's frames).

const (
	contentNone = iota
	contentRaw
	contentFrames
	contentRun
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
	r         *bufio.Reader
	err       error
	dataSize  int64
	indexSize int64
}

func (r *indexReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBadEntry, fmt.Sprintf(format, a...))
	}
}

func (r *indexReader) int() int64 { return readVarint(r, binary.ReadVarint) }

func (r *indexReader) uint() uint64 { return readVarint(r, binary.ReadUvarint) }

// readVarint reads one number with read (binary.ReadVarint or
// ReadUvarint); nothing once the index has failed.
func readVarint[T int64 | uint64](r *indexReader, read func(io.ByteReader) (T, error)) T {
	if r.err != nil {
		return 0
	}
	v, err := read(r.r)
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

// loc reads a content location of size bytes.
func (r *indexReader) loc(kind uint64, size int64, c *cachedChain, data *os.File) (tartree.Section, bool) {
	switch kind {
	case contentRaw:
		off := r.int()
		if off < 0 || size < 0 || off > r.dataSize-size {
			r.fail("content outside the data")
			return tartree.Section{}, false
		}
		return tartree.Section{From: data, Off: off}, true
	case contentNone:
		return tartree.Section{}, true
	case contentRun:
		id, off := r.uint(), r.int()
		// off+size must not wrap: a negative end would pass the check
		// against the run's length and fail every build at its read.
		if id >= uint64(len(c.readers)) || off < 0 || size < 0 || off > math.MaxInt64-size {
			r.fail("content in no run")
			return tartree.Section{}, false
		}
		c.checks = append(c.checks, runCheck{int(id), off + size})
		return tartree.Section{From: c.readers[id], Off: off}, true
	}
	r.fail("content kind %d", kind)
	return tartree.Section{}, false
}

// runCheck is a content in a run, to check against the run's length once
// the runs are read.
type runCheck struct {
	id  int
	end int64
}

func (r *indexReader) read(c *cachedChain, data *os.File, budget *entryBudget) error {
	magic := make([]byte, len(chainFormat))
	if _, err := io.ReadFull(r.r, magic); err != nil || string(magic) != chainFormat {
		return fmt.Errorf("%w: not a chain index", errBadEntry)
	}
	// Allocated before they are read: bounded by what the index can
	// hold, a run's record being at least its 32-byte headers digest.
	runs := make([]*tartree.Run, r.count(uint64(r.indexSize/32)))
	c.dec = &zframe.Decoder{}
	c.readers = make([]*zframe.RunReader, len(runs))
	for i := range runs {
		runs[i] = &tartree.Run{}
		c.readers[i] = c.dec.Reader(&runs[i].Compressed)
	}
	nodes := r.count(1 << 40)
	c.tree = tartree.New()
	type dir struct {
		path string
		node *tartree.Node
	}
	var stack []dir
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
			src, ok := r.loc(kind, n.Size, c, data)
			if !ok {
				break
			}
			size := n.Size
			n.Source = src
			n.Open = func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(src.From, src.Off, size)), nil }
		}
		if r.err != nil {
			return r.err
		}
		if (n.Open != nil) != (n.Type == tar.TypeReg) {
			return fmt.Errorf("%w: %s: content for a node of type %q", errBadEntry, p, n.Type)
		}
		if err := cachedNodeOK(n); err != nil {
			return fmt.Errorf("%w: %s: %v", errBadEntry, p, err)
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
		if base == "" || base == "." || base == ".." || len(base) > 255 || strings.ContainsRune(p, 0) || strings.Contains(p, "//") {
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
	if nodes == 0 {
		return fmt.Errorf("%w: no root", errBadEntry)
	}
	c.runs = map[string][]*tartree.Run{}
	for _, run := range runs {
		first := r.str()
		run.Count = r.count(1 << 40)
		if h := r.str(); len(h) == len(run.Headers) {
			copy(run.Headers[:], h)
		} else {
			r.fail("a headers digest of %d bytes", len(h))
		}
		run.Raw = r.int()
		run.End = tartree.RunEnd(r.uint())
		run.Compressed.Key, run.Compressed.From = r.str(), data
		run.Frames = r.extents()
		for range r.count(1 << 40) {
			src, ok := r.loc(r.uint(), 0, c, data)
			if !ok {
				break
			}
			run.Sources = append(run.Sources, src)
		}
		if r.err == nil && (run.End > tartree.EndOfArchive || run.Raw < 0 || int64(len(run.Frames)) != (run.Raw+zframe.FrameSize-1)/zframe.FrameSize) {
			r.fail("a run of %d bytes in %d frames", run.Raw, len(run.Frames))
		}
		if r.err != nil {
			return r.err
		}
		c.runs[first] = append(c.runs[first], run)
	}
	for _, ck := range c.checks {
		if ck.end > runs[ck.id].Raw {
			return fmt.Errorf("%w: content past the end of its run", errBadEntry)
		}
	}
	c.checks = nil
	c.nextInode = r.uint()
	if r.err != nil {
		return r.err
	}
	if _, err := r.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: data after the index", errBadEntry)
	}
	return nil
}

// cachedNodeOK holds a loaded node to what the flattener makes (nodeFor,
// hardlink): the template writer takes the tree as it is.
func cachedNodeOK(n *tartree.Node) error {
	switch n.Type {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("a node of type %q", n.Type)
	}
	if n.Mode < 0 || n.Mode&^0o7777 != 0 || n.UID < 0 || n.GID < 0 {
		return fmt.Errorf("mode %o, owner %d:%d", n.Mode, n.UID, n.GID)
	}
	if n.Type == tar.TypeSymlink && n.Mode != 0o777 {
		return fmt.Errorf("a symlink of mode %o", n.Mode)
	}
	if n.Type != tar.TypeChar && n.Type != tar.TypeBlock && n.Type != tar.TypeFifo && (n.Devmajor != 0 || n.Devminor != 0) {
		return fmt.Errorf("device numbers on a node of type %q", n.Type)
	}
	if n.Devmajor < 0 || n.Devminor < 0 {
		return errors.New("negative device numbers")
	}
	// Only files and symlinks are hard linked (an Inode group).
	if n.Inode != 0 && n.Type != tar.TypeReg && n.Type != tar.TypeSymlink {
		return fmt.Errorf("a hard link group on a node of type %q", n.Type)
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

// copyOp is a byte range the data file is made of.
type copyOp struct {
	from    io.ReaderAt
	off, n  int64
	section bool // raw content: the range must be whole
}

// chainSave is a cache entry being written: its index is written and its
// data is copied in the background, from files that outlive it (the
// spills, the precompressed frames, a loaded entry's data), while the
// template is written.
type chainSave struct {
	done chan error
}

func (cs *chainSave) wait() error {
	if cs == nil {
		return nil
	}
	return <-cs.done
}

// saveChain starts storing tree, the flattened chain, with runs, the runs
// of its layers, unless the entry exists; its wait returns once it is in
// place. It reads tree now: the caller may change it afterwards. Failing
// to save costs only the reuse.
func (s *Store) saveChain(chain []digest.Digest, frames string, clamp int64, tree *tartree.Tree, runs map[string][]*tartree.Run, nextInode uint64) (_ *chainSave, err error) {
	cr, err := s.openChains(true)
	if err != nil {
		return nil, nil // findChain said why
	}
	defer func() {
		if err != nil {
			cr.Close()
		}
	}()
	target := chainKey(chain, frames, clamp)
	if _, err := cr.Lstat(target); err == nil {
		cr.Close()
		return nil, nil
	}
	tmp, err := tempDirIn(cr, target)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cr.RemoveAll(tmp)
		}
	}()

	// Which runs to keep: those a later build could reuse (every member
	// still in the tree), and those holding content of the tree.
	present := map[tartree.Section]bool{}
	held := map[*tartree.Compressed]bool{}
	var count int64
	tree.Walk(func(_ string, n *tartree.Node) error {
		count++
		if n.Type == tar.TypeReg && n.Compressed == nil && n.Size > 0 {
			present[n.Source] = true
			if rr, ok := n.Source.From.(*zframe.RunReader); ok {
				held[rr.Run()] = true
			}
		}
		return nil
	})
	firsts := make([]string, 0, len(runs))
	for first := range runs {
		firsts = append(firsts, first)
	}
	sort.Strings(firsts)
	type keptRun struct {
		first string
		run   *tartree.Run
	}
	var kept []keptRun
	ids := map[*tartree.Compressed]int{}
	for _, first := range firsts {
		for _, run := range runs[first] {
			keep := held[&run.Compressed]
			if !keep {
				keep = true
				for _, src := range run.Sources {
					keep = keep && present[src]
				}
			}
			if keep {
				ids[&run.Compressed] = len(kept)
				kept = append(kept, keptRun{first, run})
			}
		}
	}
	present = nil

	indexFile, err := cr.Create(path.Join(tmp, "index"))
	if err != nil {
		return nil, err
	}
	defer indexFile.Close()
	index := &hashWriter{w: bufio.NewWriterSize(indexFile, 1<<20), h: sha256.New()}
	iw := &indexWriter{w: bufio.NewWriterSize(index, 64<<10)}
	iw.w.WriteString(chainFormat)
	iw.uint(uint64(len(kept)))
	iw.uint(uint64(count))

	var ops []copyOp
	var size int64 // of the data so far
	frameOps := func(c *tartree.Compressed) {
		iw.str(c.Key)
		iw.uint(uint64(len(c.Frames)))
		for _, e := range c.Frames {
			ops = append(ops, copyOp{from: c.From, off: e.Off, n: e.Len})
			iw.int(size)
			iw.int(e.Len)
			size += e.Len
		}
	}
	// loc writes where content now at src is, moving it to the data
	// unless it is in a kept run.
	moved := map[tartree.Section]int64{}
	loc := func(src tartree.Section, n int64) error {
		if rr, ok := src.From.(*zframe.RunReader); ok {
			id, ok := ids[rr.Run()]
			if !ok {
				return errors.New("content in a run that is not kept")
			}
			iw.uint(contentRun)
			iw.uint(uint64(id))
			iw.int(src.Off)
			return nil
		}
		if src.From == nil && n > 0 {
			return errors.New("content with no source")
		}
		off, ok := moved[src]
		if !ok || n == 0 {
			off = size
			ops = append(ops, copyOp{from: src.From, off: src.Off, n: n, section: true})
			size += n
			if n > 0 {
				moved[src] = off
			}
		}
		iw.uint(contentRaw)
		iw.int(off)
		return nil
	}
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
			frameOps(n.Compressed)
		default:
			if err := loc(n.Source, n.Size); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range kept {
		iw.str(k.first)
		iw.uint(uint64(k.run.Count))
		iw.str(string(k.run.Headers[:]))
		iw.int(k.run.Raw)
		iw.uint(uint64(k.run.End))
		frameOps(&k.run.Compressed)
		iw.uint(uint64(len(k.run.Sources)))
		for _, src := range k.run.Sources {
			if rr, ok := src.From.(*zframe.RunReader); ok {
				if id, ok := ids[rr.Run()]; ok {
					iw.uint(contentRun)
					iw.uint(uint64(id))
					iw.int(src.Off)
					continue
				}
			} else if off, ok := moved[src]; ok {
				iw.uint(contentRaw)
				iw.int(off)
				continue
			}
			// No file of the tree: the run can never be reused, but
			// holds content that is.
			iw.uint(contentNone)
		}
	}
	iw.uint(nextInode)
	if err := iw.w.Flush(); err != nil {
		return nil, err
	}
	if err := index.w.Flush(); err != nil {
		return nil, err
	}
	if err := indexFile.Close(); err != nil {
		return nil, err
	}
	m := chainManifest{
		Format: chainFormat, Chain: chain, Frames: frames, Clamp: clamp, Created: time.Now().UTC(),
		IndexSize: index.n, IndexHash: hex.EncodeToString(index.h.Sum(nil)), DataSize: size, Nodes: count,
	}
	cs := &chainSave{done: make(chan error, 1)}
	go func() {
		defer cr.Close()
		err := writeChainData(cr, tmp, target, ops, m)
		if err != nil {
			cr.RemoveAll(tmp)
		}
		cs.done <- err
	}()
	return cs, nil
}

// writeChainData copies the data, writes the manifest and puts the entry
// in place.
func writeChainData(cr *os.Root, tmp, target string, ops []copyOp, m chainManifest) error {
	f, err := cr.Create(path.Join(tmp, "data"))
	if err != nil {
		return err
	}
	defer f.Close()
	data := &hashWriter{w: bufio.NewWriterSize(f, 1<<20), h: sha256.New()}
	buf := make([]byte, 256<<10)
	for _, op := range ops {
		if op.n == 0 {
			continue
		}
		n, err := io.CopyBuffer(data, io.NewSectionReader(op.from, op.off, op.n), buf)
		if err != nil {
			return err
		}
		if n != op.n {
			return fmt.Errorf("%d bytes of %d", n, op.n)
		}
	}
	if err := data.w.Flush(); err != nil {
		return err
	}
	if data.n != m.DataSize {
		return fmt.Errorf("wrote %d bytes of data, not %d", data.n, m.DataSize)
	}
	m.DataHash = hex.EncodeToString(data.h.Sum(nil))
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	// No fsync: a torn entry after a crash fails its digests and is
	// rebuilt, and syncing hundreds of MB would cost the build more than
	// the cache saves it.
	if err := cr.WriteFile(path.Join(tmp, "manifest.json"), b, 0o644); err != nil {
		return err
	}
	if err := cr.Rename(tmp, target); err != nil {
		if _, serr := cr.Lstat(target); serr == nil {
			cr.RemoveAll(tmp) // another build saved it first
			return nil
		}
		return err
	}
	return nil
}
