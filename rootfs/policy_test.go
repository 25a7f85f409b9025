package rootfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nexcage/nexcage/progress"
)

// steps records a reporter's steps.
type steps struct {
	mu    sync.Mutex
	lines []string
}

func (s *steps) Step(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}
func (s *steps) Warn(string, ...any) {}
func (s *steps) Bytes(label string, total int64) progress.Counter {
	return progress.Discard.Bytes(label, total)
}
func (s *steps) has(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// TestPullPolicy walks one local image through the policies: not stored
// (never refuses, missing pulls), stored (missing and never use it,
// always does not look), rewritten under the same tag (missing reads it
// again, never keeps the stored copy), and gone (the stored copy is all
// there is).
func TestPullPolicy(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "layout")
	ref := writeLayout(t, dir, "v1", corpusCase(t, "modes"))
	s := newStore(t)
	opts := func(p PullPolicy, rep progress.Reporter) GetOptions {
		return GetOptions{SourceOptions: amd64(), Pull: p, Progress: rep}
	}
	lookup := func(p PullPolicy) (bool, error) {
		t.Helper()
		_, stored, err := s.Lookup(ctx, ref, opts(p, nil))
		return stored, err
	}

	_, err := lookup(PullNever)
	var ns *NotStoredError
	if !errors.As(err, &ns) || !errors.Is(err, ErrNotFound) || ns.Store != s.Dir {
		t.Fatalf("never, not stored: err = %v, want a *NotStoredError of %s", err, s.Dir)
	}
	if _, err := s.Get(ctx, ref, opts(PullNever, nil)); !errors.As(err, &ns) {
		t.Fatalf("Get under never pulled or failed otherwise: %v", err)
	}
	if stored, err := lookup(PullMissing); stored || err != nil {
		t.Fatalf("missing, not stored: stored=%v err=%v", stored, err)
	}
	rep := &steps{}
	img, err := s.Get(ctx, ref, opts("", rep))
	if err != nil {
		t.Fatal(err)
	}
	if rep.has("from the store") {
		t.Error("Get reported a pulled image as used from the store")
	}

	for _, p := range []PullPolicy{"", PullMissing, PullNever} {
		if stored, err := lookup(p); !stored || err != nil {
			t.Errorf("%q, stored: stored=%v err=%v", p, stored, err)
		}
	}
	if stored, err := lookup(PullAlways); stored || err != nil {
		t.Errorf("always: stored=%v err=%v, want the source read", stored, err)
	}
	rep = &steps{}
	if got, err := s.Get(ctx, ref, opts(PullMissing, rep)); err != nil || got.Digest != img.Digest || !rep.has("from the store") {
		t.Errorf("Get of a stored image = %v, %v; steps %q", got.Digest, err, rep.lines)
	}

	// Rewritten under the same tag: a new image for missing.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	writeLayout(t, dir, "v1", corpusCase(t, "whiteouts"))
	rep = &steps{}
	if _, stored, err := s.Lookup(ctx, ref, opts(PullMissing, rep)); stored || err != nil || !rep.has("changed since it was stored") {
		t.Errorf("missing, rewritten: stored=%v err=%v steps %q", stored, err, rep.lines)
	}
	if stored, err := lookup(PullNever); !stored || err != nil {
		t.Errorf("never, rewritten: stored=%v err=%v, want the stored copy", stored, err)
	}

	// Gone: the stored copy stands.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if stored, err := lookup(PullMissing); !stored || err != nil {
		t.Errorf("missing, source gone: stored=%v err=%v", stored, err)
	}

	if _, err := lookup("sometimes"); err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Errorf("an unknown policy: err = %v", err)
	}
}
