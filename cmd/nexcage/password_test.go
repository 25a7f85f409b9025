package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPasswordFileTooLongRefused: a first line longer than deploy reads
// was cut and the cut password set, one the user never chose.
func TestPasswordFileTooLongRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{strings.Repeat("a", maxPasswordLine), true},
		{strings.Repeat("a", maxPasswordLine) + "\r", true},
		{strings.Repeat("a", maxPasswordLine+1), false},
		{strings.Repeat("a", 3*maxPasswordLine), false},
	} {
		f := filepath.Join(dir, "pw")
		if err := os.WriteFile(f, []byte(tc.line+"\nsecond line\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pw, err := readPasswordFile(f)
		if tc.ok && (err != nil || pw != strings.TrimRight(tc.line, "\r")) {
			t.Errorf("%d bytes: %v, want it read whole", len(tc.line), err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "longer than")) {
			t.Errorf("%d bytes: got a password of %d bytes (%v), want a refusal", len(tc.line), len(pw), err)
		}
	}
}
