package progress

import (
	"io"
	"strings"
	"testing"
)

type sum struct{ n int }

func (s *sum) Add(n int)   { s.n += n }
func (s *sum) Done(string) {}

// TestReaderCounts: every byte read through a Reader reaches its
// counter, the last short read too.
func TestReaderCounts(t *testing.T) {
	var c sum
	b, err := io.ReadAll(&Reader{R: strings.NewReader(strings.Repeat("x", 70000)), C: &c})
	if err != nil || len(b) != 70000 || c.n != 70000 {
		t.Fatalf("read %d bytes (%v), counted %d; want 70000 both", len(b), err, c.n)
	}
}
