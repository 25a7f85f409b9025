package convert_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
)

func checkTemplate(t *testing.T, p string, opts convert.CheckOptions) []convert.CheckResult {
	t.Helper()
	res, err := convert.CheckTemplate(context.Background(), p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func checkBundle(t *testing.T, p string, opts convert.CheckOptions) []convert.CheckResult {
	t.Helper()
	res, err := convert.CheckBundle(context.Background(), p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// resultFor returns the one result whose check contains substr.
func resultFor(t *testing.T, res []convert.CheckResult, substr string) convert.CheckResult {
	t.Helper()
	var found []convert.CheckResult
	for _, r := range res {
		if strings.Contains(r.Check, substr) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d results for %q in:\n%s", len(found), substr, dumpResults(res))
	}
	return found[0]
}

func noResultFor(t *testing.T, res []convert.CheckResult, substr string) {
	t.Helper()
	for _, r := range res {
		if strings.Contains(r.Check, substr) {
			t.Errorf("unexpected %q in:\n%s", substr, dumpResults(res))
		}
	}
}

func dumpResults(res []convert.CheckResult) string {
	var b strings.Builder
	for _, r := range res {
		b.WriteString(r.Status + "  " + r.Check + ": " + r.Cause + "; " + r.Fix + "\n")
	}
	return b.String()
}

func allOK(t *testing.T, res []convert.CheckResult) {
	t.Helper()
	for _, r := range res {
		if r.Status != convert.CheckOK {
			t.Fatalf("not all ok:\n%s", dumpResults(res))
		}
	}
}

func wantStatus(t *testing.T, res []convert.CheckResult, substr, status, causePart string) convert.CheckResult {
	t.Helper()
	r := resultFor(t, res, substr)
	if r.Status != status || !strings.Contains(r.Cause, causePart) {
		t.Errorf("%q: got %s %q, want %s with %q\n%s", substr, r.Status, r.Cause, status, causePart, dumpResults(res))
	}
	if status != convert.CheckOK && r.Fix == "" {
		t.Errorf("%q: no fix", substr)
	}
	return r
}

// Real templates, as convert writes them, pass every check, in each
// compression.
func TestCheckTemplateSound(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "alpine-amd64"), false)
	for _, comp := range []convert.Compression{convert.Zstd, convert.Gzip, convert.XZ} {
		res := convertTo(t, b, t.TempDir(), convert.Options{Compression: comp})
		out := checkTemplate(t, res.Template, convert.CheckOptions{})
		allOK(t, out)
		resultFor(t, out, "decompresses ("+string(comp)+") to the end")
		resultFor(t, out, `PVE detects ostype alpine (os-release ID "alpine"), as recorded`)
		resultFor(t, out, "has /sbin")
		resultFor(t, out, "architecture amd64 matches /bin/sh")
		resultFor(t, out, "size and sha256 match")
	}
}

// An application image is recorded unmanaged on purpose: the OS check
// compares with what nexcage detected at build time.
func TestCheckTemplateApplication(t *testing.T) {
	res := convertTo(t, unpack(t, corpusCase(t, "alpine-app"), false), t.TempDir(), convert.Options{})
	if res.Metadata.OSType != "unmanaged" {
		t.Fatalf("ostype %s", res.Metadata.OSType)
	}
	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	allOK(t, out)
	resultFor(t, out, "PVE detects ostype alpine")
}

// A privileged-only template keeps high ids: that is not a failure.
func TestCheckTemplatePrivileged(t *testing.T) {
	testenv.RequireRoot(t)
	b := unpack(t, corpusCase(t, "ids"), false)
	res := convertTo(t, b, t.TempDir(), convert.Options{Privileged: true})
	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	allOK(t, out)
	resultFor(t, out, "a privileged-only template")
}

func alpineTemplate(t *testing.T) *convert.Result {
	t.Helper()
	return convertTo(t, unpack(t, corpusCase(t, "alpine-amd64"), false), t.TempDir(), convert.Options{})
}

// A truncated template: the stream breaks, the sidecar's size and sha256
// no longer match, and nothing is claimed about the rootfs.
func TestCheckTemplateTruncated(t *testing.T) {
	testenv.CheckLeaks(t)
	res := alpineTemplate(t)
	if err := os.Truncate(res.Template, res.Metadata.Template.Size/2); err != nil {
		t.Fatal(err)
	}
	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	wantStatus(t, out, "decompresses (zstd) to the end", convert.CheckFail, "unexpected EOF")
	wantStatus(t, out, "size and sha256 match", convert.CheckFail, "the sidecar says "+strconv.FormatInt(res.Metadata.Template.Size, 10))
	noResultFor(t, out, "PVE detects")
	noResultFor(t, out, "has /sbin")
	noResultFor(t, out, "owners within")
}

// A flipped byte inside the compressed data: zstd's frame checksum or
// block decoding catches it.
func TestCheckTemplateFlippedByte(t *testing.T) {
	testenv.CheckLeaks(t)
	res := alpineTemplate(t)
	b := readFile(t, res.Template)
	b[len(b)/2] ^= 0x55
	os.WriteFile(res.Template, b, 0o644)
	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	wantStatus(t, out, "decompresses (zstd) to the end", convert.CheckFail, "")
	wantStatus(t, out, "size and sha256 match", convert.CheckFail, "sha256 is")
}

// A sidecar with a wrong sha256: only that check fails.
func TestCheckTemplateWrongSidecarSHA(t *testing.T) {
	res := alpineTemplate(t)
	raw := readFile(t, res.Manifest)
	bad := bytes.Replace(raw, []byte(res.Metadata.Template.SHA256), []byte(strings.Repeat("0", 64)), 1)
	os.WriteFile(res.Manifest, bad, 0o644)
	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	r := wantStatus(t, out, filepath.Base(res.Manifest)+": size and sha256 match", convert.CheckFail, "the sidecar says "+strings.Repeat("0", 64))
	if !strings.Contains(r.Fix, "rebuild") {
		t.Errorf("fix: %s", r.Fix)
	}
	for _, x := range out {
		if x.Status != convert.CheckOK && x != r {
			t.Errorf("another problem: %+v", x)
		}
	}

	os.WriteFile(res.Manifest, []byte("{not json"), 0o644)
	wantStatus(t, checkTemplate(t, res.Template, convert.CheckOptions{}), "size and sha256 match", convert.CheckFail, "is not a nexcage manifest")
}

// The sidecar .conf must parse with keys PVE accepts, and agree with
// the .json.
func TestCheckTemplateConf(t *testing.T) {
	res := alpineTemplate(t)
	orig := readFile(t, res.Config)
	for _, tc := range []struct{ name, conf, cause string }{
		{"unknown key", string(orig) + "frobnicate: 1\n", `unknown key "frobnicate"`},
		{"rootfs key", string(orig) + "lxc.rootfs.path: /x\n", "lxc.rootfs.path is refused by PVE"},
		{"bad arch", strings.Replace(string(orig), "arch: amd64", "arch: sparc", 1), `arch "sparc" is not one PVE knows`},
		{"arch disagrees", strings.Replace(string(orig), "arch: amd64", "arch: arm64", 1), "arch arm64, but the .json says amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(res.Config, []byte(tc.conf), 0o644)
			wantStatus(t, checkTemplate(t, res.Template, convert.CheckOptions{}), filepath.Base(res.Config)+": parses", convert.CheckFail, tc.cause)
		})
	}
	os.Remove(res.Config)
	wantStatus(t, checkTemplate(t, res.Template, convert.CheckOptions{}), filepath.Base(res.Config)+": parses", convert.CheckWarn, "is missing")
}

// member is one tar entry of a hand-made template.
type member struct {
	hdr  tar.Header
	body string
}

func dirM(name string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}
func fileM(name, body string) member {
	return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

// baseMembers is a minimal Alpine-looking rootfs.
func baseMembers() []member {
	return []member{
		dirM("./"), dirM("./dev/"), dirM("./etc/"),
		fileM("./etc/alpine-release", "3.20.3\n"),
		fileM("./etc/os-release", "ID=alpine\nVERSION_ID=3.20.3\n"),
		dirM("./sbin/"),
	}
}

const alpineConf = "arch: amd64\nostype: alpine\nunprivileged: 1\n"

// handTemplate writes members as a zstd template with a .conf and a .json
// that match it (privileged as told).
func handTemplate(t *testing.T, members []member, conf string, privileged bool) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "hand.tar.zst")
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, m := range members {
		h := m.hdr
		h.ModTime, h.Format = time.Unix(1700000000, 0), tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(m.body))
	}
	tw.Close()
	zw.Close()
	os.WriteFile(p, buf.Bytes(), 0o644)
	sum := sha256.Sum256(buf.Bytes())
	meta := convert.Metadata{
		Template:   convert.TemplateInfo{File: "hand.tar.zst", SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Compression: "zstd"},
		OS:         convert.OSInfo{ID: "alpine", OSType: "alpine"},
		OSType:     "alpine",
		Arch:       "amd64",
		Privileged: privileged,
	}
	j, _ := json.Marshal(meta)
	os.WriteFile(filepath.Join(dir, "hand.json"), j, 0o644)
	os.WriteFile(filepath.Join(dir, "hand.conf"), []byte(conf), 0o644)
	return p
}

func TestCheckTemplateHandMadeSound(t *testing.T) {
	allOK(t, checkTemplate(t, handTemplate(t, baseMembers(), alpineConf, false), convert.CheckOptions{}))
}

// Every member rule: one broken template each, with real bad archives.
func TestCheckTemplateMembers(t *testing.T) {
	testenv.CheckLeaks(t)
	armELF := "\x7fELF\x02\x01\x01" + strings.Repeat("\x00", 9) + "\x02\x00\xb7\x00" + strings.Repeat("\x00", 44)
	for _, tc := range []struct {
		name       string
		extra      []member
		privileged bool
		check      string
		status     string
		cause      string
	}{
		{"unprefixed", []member{fileM("etc/hosts", "x")}, false, "./-prefixed", convert.CheckFail, `"etc/hosts" has no ./ prefix`},
		{"duplicate", []member{fileM("./etc/os-release", "ID=debian\n")}, false, "./-prefixed", convert.CheckFail, "/etc/os-release appears more than once"},
		{"dot-dot", []member{fileM("./../evil", "x")}, false, "escapes", convert.CheckFail, `"./../evil"`},
		{"absolute", []member{fileM("/etc/shadow", "x")}, false, "escapes", convert.CheckFail, `"/etc/shadow"`},
		{"hard link outside", []member{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "./etc/l", Linkname: "../../etc/passwd"}}}, false, "escapes", convert.CheckFail, `/etc/l is a hard link to "../../etc/passwd"`},
		{"hard link before its target", []member{{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "./etc/a", Linkname: "./etc/zz"}}, fileM("./etc/zz", "x")}, false, "hard link targets", convert.CheckFail, "/etc/a -> ./etc/zz"},
		{"device outside /dev", []member{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "./etc/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}}, false, "no device nodes", convert.CheckFail, "outside /dev: /etc/null"},
		{"device outside /dev, privileged", []member{{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "./etc/sda", Mode: 0o660, Devmajor: 8}}}, true, "no device nodes", convert.CheckWarn, "privileged-only"},
		{"device in /dev", []member{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "./dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}}, false, "no device nodes", convert.CheckWarn, "PVE skips them"},
		{"high ids", []member{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./home/", Mode: 0o755, Uid: 100000, Gid: 100000}}}, false, "owners within 0..65535", convert.CheckFail, "/home/ (100000:100000)"},
		{"high ids, privileged", []member{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./home/", Mode: 0o755, Uid: 100000}}}, true, "privileged-only template", convert.CheckOK, ""},
		{"arch of /bin/sh", []member{dirM("./bin/"), fileM("./bin/sh", armELF)}, false, "architecture", convert.CheckFail, "/bin/sh is an arm64 binary, the sidecars say amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := checkTemplate(t, handTemplate(t, append(baseMembers(), tc.extra...), alpineConf, tc.privileged), convert.CheckOptions{})
			wantStatus(t, out, tc.check, tc.status, tc.cause)
			resultFor(t, out, "is a valid tar")
		})
	}
}

// /sbin and the OS PVE detects, against the recorded ostype.
func TestCheckTemplateOS(t *testing.T) {
	var noSbin []member
	for _, m := range baseMembers() {
		if m.hdr.Name != "./sbin/" {
			noSbin = append(noSbin, m)
		}
	}
	out := checkTemplate(t, handTemplate(t, noSbin, alpineConf, false), convert.CheckOptions{})
	wantStatus(t, out, "has /sbin", convert.CheckFail, "there is no /sbin, but the container is created as ostype alpine")

	unmanaged := strings.Replace(alpineConf, "ostype: alpine", "ostype: unmanaged", 1)
	out = checkTemplate(t, handTemplate(t, noSbin, unmanaged, false), convert.CheckOptions{})
	wantStatus(t, out, "no /sbin, which an unmanaged container does not need", convert.CheckOK, "")
	// The .conf's unmanaged against a detected alpine: the conf wins,
	// and differs from what PVE would detect.
	wantStatus(t, out, "matches the recorded ostype", convert.CheckFail, "the .conf records unmanaged")

	debian := strings.Replace(alpineConf, "ostype: alpine", "ostype: debian", 1)
	out = checkTemplate(t, handTemplate(t, baseMembers(), debian, false), convert.CheckOptions{})
	wantStatus(t, out, "matches the recorded ostype", convert.CheckFail, `PVE detects alpine (os-release ID "alpine"), but the .conf records debian`)

	// An os-release PVE does not know, no marker file, nothing recorded.
	odd := []member{dirM("./"), dirM("./etc/"), fileM("./etc/os-release", "ID=plan9\n"), dirM("./sbin/")}
	p := handTemplate(t, odd, alpineConf, false)
	dir := filepath.Dir(p)
	os.Remove(filepath.Join(dir, "hand.conf"))
	os.Remove(filepath.Join(dir, "hand.json"))
	out = checkTemplate(t, p, convert.CheckOptions{})
	wantStatus(t, out, "matches the recorded ostype", convert.CheckWarn, `os-release ID "plan9" is not a distribution PVE manages`)
	resultFor(t, out, "no sidecars")
}

// Temporary names a killed convert left beside the template warn; one
// still open in a running process is left alone; --repair removes them.
func TestCheckTemplateLeftovers(t *testing.T) {
	testenv.CheckLeaks(t)
	res := alpineTemplate(t)
	f, err := atomicfile.Create(res.Template, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("partial")
	f.File.Close() // as a SIGKILL leaves it
	name := filepath.Base(f.Name())

	out := checkTemplate(t, res.Template, convert.CheckOptions{})
	wantStatus(t, out, "leftover "+name, convert.CheckWarn, "temporary file of an interrupted write (7 B)")
	out = checkTemplate(t, res.Template, convert.CheckOptions{Repair: true, InUse: func(p string) bool { return p == f.Name() }})
	r := wantStatus(t, out, "leftover "+name, convert.CheckOK, "")
	if r.Repaired || !strings.Contains(r.Check, "left alone") {
		t.Errorf("in use: %+v", r)
	}
	out = checkTemplate(t, res.Template, convert.CheckOptions{Repair: true})
	if r := resultFor(t, out, "leftover "+name); !r.Repaired || r.Status != convert.CheckOK {
		t.Errorf("not repaired: %+v", r)
	}
	if _, err := os.Stat(f.Name()); err == nil {
		t.Error("the leftover is still there")
	}
	allOK(t, checkTemplate(t, res.Template, convert.CheckOptions{}))
}

func TestCheckTemplateName(t *testing.T) {
	wantStatus(t, checkTemplate(t, filepath.Join(t.TempDir(), "x.tar"), convert.CheckOptions{}), "template name", convert.CheckFail, "does not end in")
	wantStatus(t, checkTemplate(t, filepath.Join(t.TempDir(), "x.tar.zst"), convert.CheckOptions{}), "template file", convert.CheckFail, "no such file")
}

// editSpec rewrites a bundle's config.json through a map, keeping every
// field umoci wrote.
func editSpec(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	var m map[string]any
	if err := json.Unmarshal(readFile(t, p), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.MarshalIndent(m, "", "\t")
	os.WriteFile(p, b, 0o644)
}

func TestCheckBundle(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	out := checkBundle(t, b.Dir, convert.CheckOptions{})
	allOK(t, out)
	resultFor(t, out, "config.json is valid against the runtime-spec 1.2.1 schema")
	resultFor(t, out, "every mount maps to PVE")
	resultFor(t, out, "process: an application container, entrypoint /app/run.sh sleep infinity")
	// The config.json itself names the bundle too.
	allOK(t, checkBundle(t, filepath.Join(b.Dir, "config.json"), convert.CheckOptions{}))

	t.Run("relative bind source", func(t *testing.T) {
		editSpec(t, b.Dir, func(m map[string]any) {
			m["mounts"] = append(m["mounts"].([]any), map[string]any{"destination": "/srv", "type": "bind", "source": "srv", "options": []string{"rbind"}})
		})
		out := checkBundle(t, b.Dir, convert.CheckOptions{})
		wantStatus(t, out, "every mount maps to PVE", convert.CheckFail, `source: bind source "srv" is relative`)
		resultFor(t, out, "valid against the runtime-spec")
	})
	t.Run("schema", func(t *testing.T) {
		editSpec(t, b.Dir, func(m map[string]any) { m["process"].(map[string]any)["user"] = map[string]any{"uid": -1, "gid": 0} })
		wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "schema", convert.CheckFail, "process.user.uid: Must be greater than or equal to 0")
		editSpec(t, b.Dir, func(m map[string]any) { m["ociVersion"] = 2 })
		wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "schema", convert.CheckFail, "ociVersion: Invalid type. Expected: string, given: integer")
	})
	t.Run("syntax", func(t *testing.T) {
		os.WriteFile(filepath.Join(b.Dir, "config.json"), []byte("{\n  \"ociVersion\": \"1.2.0\",\n  oops\n}"), 0o644)
		wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "config.json parses", convert.CheckFail, "line 3, column")
	})
}

func TestCheckBundleRootAndProcess(t *testing.T) {
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	editSpec(t, b.Dir, func(m map[string]any) { m["root"] = map[string]any{"path": "nowhere"} })
	wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "root path exists", convert.CheckFail, "nowhere: no such file or directory")

	editSpec(t, b.Dir, func(m map[string]any) {
		m["root"] = map[string]any{"path": "rootfs"}
		m["process"].(map[string]any)["args"] = []string{"/opt/missing"}
	})
	wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "process maps to PVE", convert.CheckFail, "the entrypoint /opt/missing does not exist")

	editSpec(t, b.Dir, func(m map[string]any) {
		m["process"].(map[string]any)["args"] = []string{"/app/run.sh"}
		m["process"].(map[string]any)["env"] = []string{"BROKEN"}
	})
	wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "process maps to PVE", convert.CheckFail, `process.env[0] "BROKEN" is not NAME=VALUE`)
}

// A bundle directory a killed unpack left beside the bundle.
func TestCheckBundleLeftovers(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	tmp, err := atomicfile.TempDir(b.Dir)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(tmp, "rootfs", "etc"), 0o755)
	os.WriteFile(filepath.Join(tmp, "rootfs", "etc", "x"), []byte("12345"), 0o644)
	name := filepath.Base(tmp)
	wantStatus(t, checkBundle(t, b.Dir, convert.CheckOptions{}), "leftover "+name, convert.CheckWarn, "temporary directory of an interrupted write (5 B)")
	r := resultFor(t, checkBundle(t, b.Dir, convert.CheckOptions{Repair: true}), "leftover "+name)
	if !r.Repaired {
		t.Errorf("not repaired: %+v", r)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Error("the leftover is still there")
	}
}

// A directory: each template and bundle in it, and its leftovers.
func TestCheckDir(t *testing.T) {
	testenv.CheckLeaks(t)
	dir := t.TempDir()
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	res := convertTo(t, b, dir, convert.Options{})
	os.WriteFile(filepath.Join(dir, ".x.tar.zst"+atomicfile.TempMarker+"1"), []byte("x"), 0o644)
	out, err := convert.CheckDir(context.Background(), dir, convert.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, out, "leftover .x.tar.zst", convert.CheckWarn, "interrupted write")
	for _, r := range out {
		if r.Status != convert.CheckOK && !strings.Contains(r.Check, "leftover") {
			t.Errorf("%+v", r)
		}
	}
	if resultFor(t, out, "size and sha256 match").Target != res.Template {
		t.Error("the template's results do not name it")
	}
}

// The schema compiled into check.go is the runtime-spec module's (the
// version in go.mod), and judges the module's own examples as it does.
func TestRuntimeSpecSchema(t *testing.T) {
	goTool := testenv.RequireTool(t, "go")
	out, err := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}}", "github.com/opencontainers/runtime-spec").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	mod := strings.TrimSpace(string(out))

	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "check.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	embedded := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Names[0].Name != "runtimeSpecSchema" {
			return true
		}
		for _, e := range vs.Values[0].(*ast.CompositeLit).Elts {
			kv := e.(*ast.KeyValueExpr)
			k, _ := strconv.Unquote(kv.Key.(*ast.BasicLit).Value)
			v, _ := strconv.Unquote(kv.Value.(*ast.BasicLit).Value)
			embedded[k] = v
		}
		return false
	})
	if len(embedded) == 0 {
		t.Fatal("runtimeSpecSchema not found in check.go")
	}
	for name, got := range embedded {
		raw, err := os.ReadFile(filepath.Join(mod, "schema", name))
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, raw); err != nil {
			t.Fatal(err)
		}
		if got != want.String() {
			t.Errorf("%s differs from the runtime-spec module's: regenerate runtimeSpecSchema (json.Compact of each file)", name)
		}
	}

	for _, verdict := range []string{"good", "bad"} {
		files, _ := filepath.Glob(filepath.Join(mod, "schema", "test", "config", verdict, "*.json"))
		for _, file := range files {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), readFile(t, file), 0o644)
			res := checkBundle(t, dir, convert.CheckOptions{})
			valid := false
			for _, r := range res {
				if strings.Contains(r.Check, "schema") && r.Status == convert.CheckOK {
					valid = true
				}
			}
			if valid != (verdict == "good") {
				t.Errorf("%s/%s: valid=%v\n%s", verdict, filepath.Base(file), valid, dumpResults(res))
			}
		}
	}
}
