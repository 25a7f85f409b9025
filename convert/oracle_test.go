package convert_test

import (
	"path/filepath"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestCorpusConfsPassPVE converts every corpus image and has Proxmox's own
// config parser and API schema judge each .conf convert writes.
func TestCorpusConfsPassPVE(t *testing.T) {
	testenv.RequireRoot(t) // the corpus holds owners and devices only root can unpack
	o := pveoracle.Require(t)
	var confs []string
	for _, c := range cases(t) {
		res, err := convert.Convert(t.Context(), unpack(t, c, false), convert.Options{Output: t.TempDir() + "/", SquashHighIDs: true})
		if err != nil {
			t.Logf("%s: not convertible (%v); the corpus tests cover why", c.Name, err)
			continue
		}
		confs = append(confs, res.Config)
	}
	if len(confs) == 0 {
		t.Fatal("no corpus image converted")
	}
	o.CheckConf(t, pveoracle.Latest, confs...)
	t.Logf("PVE %s accepts the .conf of %d corpus images (%s ...)", pveoracle.Latest.PVE, len(confs), filepath.Base(confs[0]))
}
