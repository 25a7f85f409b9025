package rootfs

import "testing"

// archiveOrder is the template's member order, which the speculator
// checks a layer against before betting on it.
func TestArchiveOrder(t *testing.T) {
	ordered := []string{".", "a", "a/b", "a/b/c", "a/bz", "a-c", "a.d", "ab", "b", "b/a"}
	for i, a := range ordered {
		for j, b := range ordered {
			if got := archiveOrder(a, b); got != (i < j) {
				t.Errorf("archiveOrder(%q, %q) = %v, want %v", a, b, got, i < j)
			}
		}
	}
}
