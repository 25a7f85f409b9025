package main

import (
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/limits"
)

// TestLimitHintNamesOnlyFlagsTheCommandHas: the hint for a limit a flag
// raises names that flag only to a command that has it; create, which
// has neither --max-entries nor --max-layer-size, is told to build first.
func TestLimitHintNamesOnlyFlagsTheCommandHas(t *testing.T) {
	for _, tc := range []struct {
		cmd, limit, want, not string
	}{
		{"build", limits.Entries, "raise it with --max-entries", "nexcage build"},
		{"build", limits.LayerSize, "raise it with --max-layer-size", "nexcage build"},
		{"unpack", limits.Entries, "raise it with --max-entries", "nexcage build"},
		{"create", limits.Entries, "run `nexcage build --max-entries N IMAGE` first", "raise it with"},
		{"create", limits.LayerSize, "run `nexcage build --max-layer-size N IMAGE` first", "raise it with"},
	} {
		c := commands[tc.cmd]
		e := &env{cmd: c, flags: newFlagSet(c, &opts{})}
		if e.flags.Lookup("max-entries") != nil && tc.cmd == "create" {
			t.Fatalf("create has --max-entries now: this case is moot")
		}
		err := limitHint(e, &limits.Error{Limit: tc.limit, Value: 9, Max: 1})
		if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.not) {
			t.Errorf("%s, %s limit: %q, want it to say %q and not %q", tc.cmd, tc.limit, msg, tc.want, tc.not)
		}
	}
}
