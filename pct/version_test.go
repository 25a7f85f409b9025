package pct_test

import (
	"slices"
	"testing"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// TestKnownVersions: the versions --pve-version offers are the ones
// ContainerFor has a release for, and each maps to its own release.
func TestKnownVersions(t *testing.T) {
	if got, want := pct.KnownVersions(), []string{"9.0", "9.1", "9.2"}; !slices.Equal(got, want) {
		t.Fatalf("KnownVersions() = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		v    pct.Version
		want lxc.PVEContainer
	}{
		{pct.Version{Major: 8, Minor: 4}, lxc.PVE90},
		{pct.Version{Major: 9, Minor: 0}, lxc.PVE90},
		{pct.Version{Major: 9, Minor: 1}, lxc.PVE91},
		{pct.Version{Major: 9, Minor: 2}, lxc.PVE92},
		{pct.Version{Major: 9, Minor: 7}, lxc.PVE92},
		{pct.Version{Major: 10, Minor: 0}, lxc.PVE92},
	} {
		if got := pct.ContainerFor(tc.v); got != tc.want {
			t.Errorf("ContainerFor(%s) = %s, want %s", tc.v, got, tc.want)
		}
	}
}
