// Package healthtest finds and asserts check results in tests of the
// stages' checks (rootfs, convert, pct).
package healthtest

import (
	"strings"
	"testing"

	"github.com/nexcage/nexcage/health"
)

// Find returns the one result whose check contains substr, and fails the
// test when there is none or more than one.
func Find(t testing.TB, res []health.Result, substr string) health.Result {
	t.Helper()
	var found []health.Result
	for _, r := range res {
		if strings.Contains(r.Check, substr) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d results for %q in:\n%s", len(found), substr, Dump(res))
	}
	return found[0]
}

// None fails the test when a result's check contains substr.
func None(t testing.TB, res []health.Result, substr string) {
	t.Helper()
	for _, r := range res {
		if strings.Contains(r.Check, substr) {
			t.Errorf("unexpected %q in:\n%s", substr, Dump(res))
		}
	}
}

// Want finds the one result for substr and fails the test unless it has
// status and its cause contains causePart; a result that is not ok must
// have a fix.
func Want(t testing.TB, res []health.Result, substr, status, causePart string) health.Result {
	t.Helper()
	r := Find(t, res, substr)
	if r.Status != status || !strings.Contains(r.Cause, causePart) {
		t.Errorf("%q: got %s %q, want %s with %q\n%s", substr, r.Status, r.Cause, status, causePart, Dump(res))
	}
	if status != health.OK && r.Fix == "" && r.Repair == "" {
		t.Errorf("%q: no fix", substr)
	}
	return r
}

// AllOK fails the test unless every result is ok.
func AllOK(t testing.TB, res []health.Result) {
	t.Helper()
	for _, r := range res {
		if r.Status != health.OK {
			t.Fatalf("not all ok:\n%s", Dump(res))
		}
	}
}

// Dump lists results one a line, for failure messages.
func Dump(res []health.Result) string {
	var b strings.Builder
	for _, r := range res {
		b.WriteString(r.Status + "  " + r.Check + ": " + r.Cause + "; " + r.Fix + "\n")
	}
	return b.String()
}
