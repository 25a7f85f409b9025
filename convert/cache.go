package convert

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/nexcage/nexcage/template"
)

// UpToDate finds a template already built from the same source digest with
// the same options, where opts would write one: the file -o names, or any
// template in the -o directory. Nothing is read but sidecars and one stat,
// so a factory's no-op rebuild costs next to nothing. The template itself
// is not rehashed here; `nexcage check` does that. sourceDigest is called
// only when a template of this reference and these options is there: a
// first build does not ask the registry for a digest it does not need.
func UpToDate(opts Options, reference string, sourceDigest func() (string, error)) (*Result, bool) {
	if reference == "" {
		return nil, false
	}
	p := &plan{opts: opts}
	if err := p.chooseOutput(); err != nil {
		return nil, false
	}
	want := p.recipe()
	var candidates []string
	if strings.HasSuffix(p.target, string(os.PathSeparator)) {
		candidates, _ = filepath.Glob(filepath.Join(p.target, "*.json"))
		sort.Strings(candidates)
	} else {
		candidates = []string{strings.TrimSuffix(p.target, p.compression.Suffix()) + ".json"}
	}
	digest, asked := "", false
	for _, c := range candidates {
		m, err := template.ReadSidecar(c)
		if err != nil {
			continue
		}
		if m.Source.Reference != reference || !reflect.DeepEqual(m.Recipe, want) {
			continue
		}
		if !asked {
			asked = true
			if digest, err = sourceDigest(); err != nil {
				return nil, false
			}
		}
		if digest == "" || m.Source.SourceDigest != digest {
			continue
		}
		tmpl := filepath.Join(filepath.Dir(c), m.Template.File)
		base := strings.TrimSuffix(c, ".json")
		fi, err := os.Stat(tmpl)
		if err != nil || fi.Size() != m.Template.Size || !exists(base+".conf") {
			continue
		}
		if !strings.HasSuffix(p.target, string(os.PathSeparator)) && tmpl != p.target {
			continue
		}
		return &Result{Template: tmpl, Config: base + ".conf", SidecarJSON: c, Sidecar: *m}, true
	}
	return nil, false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
