package pct

import (
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// FuzzMapError: any output of a failed PVE command maps to a typed error
// with a message, never a panic.
func FuzzMapError(f *testing.F) {
	for _, s := range []string{
		"CT 100 already exists on node 'pve'",
		"400 Parameter verification failed.\nhostname: invalid format\nmemory: value must have a minimum value of 16\n",
		"unable to create CT 1 - unable to create CT 2 - can't find file 'x'",
		"", "\n\n", "storage 'a' is not available on node 'b'",
	} {
		f.Add(s, 255)
	}
	f.Fuzz(func(t *testing.T, stderr string, code int) {
		defer testenv.Timed(t)()
		e := MapError([]string{"pct", "create"}, stderr, code)
		if e == nil || e.Kind == nil || e.Error() == "" {
			t.Fatalf("%q mapped to %#v", stderr, e)
		}
	})
}
