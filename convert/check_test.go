package convert_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/healthtest"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/template"
)

// runCheck runs check (convert.CheckTemplate or convert.CheckBundle) on
// p; a check that cannot run at all fails the test.
func runCheck(t *testing.T, check func(context.Context, string, health.Options) ([]health.Result, error), p string, opts health.Options) []health.Result {
	t.Helper()
	res, err := check(context.Background(), p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func checkTemplate(t *testing.T, p string, opts health.Options) []health.Result {
	t.Helper()
	return runCheck(t, convert.CheckTemplate, p, opts)
}

func checkBundle(t *testing.T, p string, opts health.Options) []health.Result {
	t.Helper()
	return runCheck(t, convert.CheckBundle, p, opts)
}

// Real templates, as convert writes them, pass every check, in each
// compression.
func TestCheckTemplateSound(t *testing.T) {
	testenv.CheckLeaks(t)
	b := unpack(t, corpusCase(t, "alpine-amd64"), false)
	for _, comp := range []template.Compression{template.Zstd, template.Gzip, template.XZ} {
		res := convertTo(t, b, t.TempDir(), convert.Options{Compression: comp})
		out := checkTemplate(t, res.Template, health.Options{})
		healthtest.AllOK(t, out)
		healthtest.Find(t, out, "decompresses ("+string(comp)+") to the end")
		healthtest.Find(t, out, `PVE detects ostype alpine (os-release ID "alpine"), as recorded`)
		healthtest.Find(t, out, "has /sbin")
		healthtest.Find(t, out, "architecture amd64 matches /bin/sh")
		healthtest.Find(t, out, "size and sha256 match")
	}
}

// An application image keeps the ostype PVE detects, as PVE's own OCI
// import does (restore_oci_archive, then PVE::LXC::Setup's detection), and
// check compares it with the rootfs like any other.
func TestCheckTemplateApplication(t *testing.T) {
	res := convertTo(t, unpack(t, corpusCase(t, "alpine-app"), false), t.TempDir(), convert.Options{})
	if res.Sidecar.OSType != "alpine" || !strings.Contains(string(readFile(t, res.Config)), "\nostype: alpine\n") {
		t.Fatalf("ostype %s, .conf:\n%s", res.Sidecar.OSType, readFile(t, res.Config))
	}
	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.AllOK(t, out)
	healthtest.Find(t, out, `PVE detects ostype alpine (os-release ID "alpine"), as recorded`)
}

// check must not contradict the .conf: an application template's .conf
// whose ostype is not the rootfs's fails, as a system template's does.
func TestCheckApplicationOSAgreesWithConf(t *testing.T) {
	res := convertTo(t, unpack(t, corpusCase(t, "alpine-app"), false), t.TempDir(), convert.Options{})
	conf := strings.Replace(string(readFile(t, res.Config)), "\nostype: alpine\n", "\nostype: debian\n", 1)
	if err := os.WriteFile(res.Config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.Want(t, out, "the OS PVE detects matches the recorded ostype", health.Fail, `PVE detects alpine (os-release ID "alpine"), but the .conf records debian`)
}

// A privileged-only template keeps high ids: that is not a failure.
func TestCheckTemplatePrivileged(t *testing.T) {
	testenv.RequireRoot(t)
	b := unpack(t, corpusCase(t, "ids"), false)
	res := convertTo(t, b, t.TempDir(), convert.Options{Privileged: true})
	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.AllOK(t, out)
	healthtest.Find(t, out, "a privileged-only template")
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
	if err := os.Truncate(res.Template, res.Sidecar.Template.Size/2); err != nil {
		t.Fatal(err)
	}
	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.Want(t, out, "decompresses (zstd) to the end", health.Fail, "unexpected EOF")
	healthtest.Want(t, out, "size and sha256 match", health.Fail, "the sidecar says "+strconv.FormatInt(res.Sidecar.Template.Size, 10))
	healthtest.None(t, out, "PVE detects")
	healthtest.None(t, out, "has /sbin")
	healthtest.None(t, out, "owners within")
}

// A flipped byte inside the compressed data: zstd's frame checksum or
// block decoding catches it.
func TestCheckTemplateFlippedByte(t *testing.T) {
	testenv.CheckLeaks(t)
	res := alpineTemplate(t)
	b := readFile(t, res.Template)
	b[len(b)/2] ^= 0x55
	os.WriteFile(res.Template, b, 0o644)
	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.Want(t, out, "decompresses (zstd) to the end", health.Fail, "")
	healthtest.Want(t, out, "size and sha256 match", health.Fail, "sha256 is")
}

// A sidecar with a wrong sha256: only that check fails.
func TestCheckTemplateWrongSidecarSHA(t *testing.T) {
	res := alpineTemplate(t)
	raw := readFile(t, res.SidecarJSON)
	bad := bytes.Replace(raw, []byte(res.Sidecar.Template.SHA256), []byte(strings.Repeat("0", 64)), 1)
	os.WriteFile(res.SidecarJSON, bad, 0o644)
	out := checkTemplate(t, res.Template, health.Options{})
	r := healthtest.Want(t, out, filepath.Base(res.SidecarJSON)+": size and sha256 match", health.Fail, "the sidecar says "+strings.Repeat("0", 64))
	if !strings.Contains(r.Fix, "rebuild") {
		t.Errorf("fix: %s", r.Fix)
	}
	for _, x := range out {
		if x.Status != health.OK && x != r {
			t.Errorf("another problem: %+v", x)
		}
	}

	os.WriteFile(res.SidecarJSON, []byte("{not json"), 0o644)
	healthtest.Want(t, checkTemplate(t, res.Template, health.Options{}), "size and sha256 match", health.Fail, "is not a nexcage .json sidecar")
}

// The sidecar .conf must hold only the lines nexcage writes, and agree
// with the .json.
func TestCheckTemplateConf(t *testing.T) {
	res := alpineTemplate(t)
	orig := readFile(t, res.Config)
	for _, tc := range []struct{ name, conf, cause string }{
		{"unknown key", string(orig) + "frobnicate: 1\n", `key frobnicate is not one nexcage writes`},
		{"rootfs key", string(orig) + "lxc.rootfs.path: /x\n", "raw key lxc.rootfs.path is not one nexcage writes"},
		{"bad arch", strings.Replace(string(orig), "arch: amd64", "arch: sparc", 1), `arch "sparc" is not one PVE knows`},
		// Finding 2 of issue 15: keys PVE accepts that give whoever
		// wrote the .conf root on the host are failures, each line named.
		{"hook", string(orig) + "lxc.hook.pre-start: /bin/sh -c 'id > /tmp/pwned'\n", "raw key lxc.hook.pre-start is not one nexcage writes"},
		{"apparmor", string(orig) + "lxc.apparmor.profile: unconfined\n", "raw key lxc.apparmor.profile"},
		{"cap.drop", string(orig) + "lxc.cap.drop:\n", "raw key lxc.cap.drop"},
		{"host root bind", string(orig) + "mp0: /,mp=/host\n", `"/" is the host's root directory`},
		{"pve bind", string(orig) + "mp0: /etc/pve,mp=/host\n", `is in /etc/pve`},
		{"tmpfs bind option", string(orig) + "lxc.mount.entry: tmpfs srv tmpfs size=1m,bind,create=dir 0 0\n", `tmpfs option "bind" is not accepted`},
		{"bind entry", string(orig) + "lxc.mount.entry: /etc etc none rbind,create=dir 0 0\n", "only tmpfs mounts"},
		{"features", string(orig) + "features: nesting=1\n", "key features is not one nexcage writes"},
		// Plain lxc.environment reaches the hooks PVE runs as root on the
		// host; a name PVE's env pattern refuses has no other way.
		{"plain environment", string(orig) + "lxc.environment: APP.MODE=prod\n", "raw key lxc.environment is not one nexcage writes"},
		{"env name PVE refuses", string(orig) + "lxc.environment.runtime: APP.MODE=prod\n", "env pattern"},
		{"arch disagrees", strings.Replace(string(orig), "arch: amd64", "arch: arm64", 1), "arch arm64, but the .json says amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(res.Config, []byte(tc.conf), 0o644)
			healthtest.Want(t, checkTemplate(t, res.Template, health.Options{}), filepath.Base(res.Config)+": parses", health.Fail, tc.cause)
		})
	}
	os.Remove(res.Config)
	healthtest.Want(t, checkTemplate(t, res.Template, health.Options{}), filepath.Base(res.Config)+": parses", health.Warn, "is missing")
}

// TestCheckTemplateConfBindMountWarns: a bind mount in the .conf names a
// host directory whoever made the template chose; check says so, and that
// deploy needs the user to ask for it.
func TestCheckTemplateConfBindMountWarns(t *testing.T) {
	res := alpineTemplate(t)
	orig := readFile(t, res.Config)
	os.WriteFile(res.Config, append(orig, "mp0: /rpool/data,mp=/x\n"...), 0o644)
	healthtest.Want(t, checkTemplate(t, res.Template, health.Options{}), filepath.Base(res.Config)+": parses", health.Warn, "asks for host directory /rpool/data")
}

// baseMembers is a minimal Alpine-looking rootfs.
func baseMembers() []testbundle.Member {
	return []testbundle.Member{
		testbundle.DirM("./"), testbundle.DirM("./dev/"), testbundle.DirM("./etc/"),
		testbundle.FileM("./etc/alpine-release", "3.20.3\n"),
		testbundle.FileM("./etc/os-release", "ID=alpine\nVERSION_ID=3.20.3\n"),
		testbundle.DirM("./sbin/"),
	}
}

const alpineConf = "arch: amd64\nostype: alpine\nunprivileged: 1\n"

// handTemplate writes members as a zstd template with a .conf and a .json
// that match it (privileged as told).
func handTemplate(t *testing.T, members []testbundle.Member, conf string, privileged bool) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "hand.tar.zst")
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	zw.Write(testbundle.Tar(t, members...))
	zw.Close()
	os.WriteFile(p, buf.Bytes(), 0o644)
	sum := sha256.Sum256(buf.Bytes())
	meta := template.Sidecar{
		Template:   template.TemplateInfo{File: "hand.tar.zst", SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Compression: "zstd"},
		OS:         template.OSInfo{ID: "alpine", OSType: "alpine"},
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
	healthtest.AllOK(t, checkTemplate(t, handTemplate(t, baseMembers(), alpineConf, false), health.Options{}))
}

// Every member rule: one broken template each, with real bad archives.
func TestCheckTemplateMembers(t *testing.T) {
	testenv.CheckLeaks(t)
	armELF := "\x7fELF\x02\x01\x01" + strings.Repeat("\x00", 9) + "\x02\x00\xb7\x00" + strings.Repeat("\x00", 44)
	for _, tc := range []struct {
		name       string
		extra      []testbundle.Member
		privileged bool
		check      string
		status     string
		cause      string
	}{
		{"unprefixed", []testbundle.Member{testbundle.FileM("etc/hosts", "x")}, false, "./-prefixed", health.Fail, `"etc/hosts" has no ./ prefix`},
		{"duplicate", []testbundle.Member{testbundle.FileM("./etc/os-release", "ID=debian\n")}, false, "./-prefixed", health.Fail, "/etc/os-release appears more than once"},
		{"dot-dot", []testbundle.Member{testbundle.FileM("./../evil", "x")}, false, "escapes", health.Fail, `"./../evil"`},
		{"absolute", []testbundle.Member{testbundle.FileM("/etc/shadow", "x")}, false, "escapes", health.Fail, `"/etc/shadow"`},
		{"hard link outside", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "./etc/l", Linkname: "../../etc/passwd"}}}, false, "escapes", health.Fail, `/etc/l is a hard link to "../../etc/passwd"`},
		{"hard link before its target", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "./etc/a", Linkname: "./etc/zz"}}, testbundle.FileM("./etc/zz", "x")}, false, "hard link targets", health.Fail, "/etc/a -> ./etc/zz"},
		{"device outside /dev", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "./etc/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}}, false, "no device nodes", health.Fail, "outside /dev: /etc/null"},
		{"device outside /dev, privileged", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "./etc/sda", Mode: 0o660, Devmajor: 8}}}, true, "no device nodes", health.Warn, "privileged-only"},
		{"device in /dev", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "./dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}}, false, "no device nodes", health.Warn, "PVE skips them"},
		{"high ids", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./home/", Mode: 0o755, Uid: 100000, Gid: 100000}}}, false, "owners within 0..65535", health.Fail, "/home/ (100000:100000)"},
		{"high ids, privileged", []testbundle.Member{{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./home/", Mode: 0o755, Uid: 100000}}}, true, "privileged-only template", health.OK, ""},
		{"arch of /bin/sh", []testbundle.Member{testbundle.DirM("./bin/"), testbundle.FileM("./bin/sh", armELF)}, false, "architecture", health.Fail, "/bin/sh is an arm64 binary, the sidecars say amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := checkTemplate(t, handTemplate(t, append(baseMembers(), tc.extra...), alpineConf, tc.privileged), health.Options{})
			healthtest.Want(t, out, tc.check, tc.status, tc.cause)
			healthtest.Find(t, out, "is a valid tar")
		})
	}
}

// /sbin and the OS PVE detects, against the recorded ostype.
func TestCheckTemplateOS(t *testing.T) {
	var noSbin []testbundle.Member
	for _, m := range baseMembers() {
		if m.Hdr.Name != "./sbin/" {
			noSbin = append(noSbin, m)
		}
	}
	out := checkTemplate(t, handTemplate(t, noSbin, alpineConf, false), health.Options{})
	healthtest.Want(t, out, "has /sbin", health.Fail, "there is no /sbin, but the container is created as ostype alpine")

	unmanaged := strings.Replace(alpineConf, "ostype: alpine", "ostype: unmanaged", 1)
	out = checkTemplate(t, handTemplate(t, noSbin, unmanaged, false), health.Options{})
	healthtest.Want(t, out, "no /sbin, which an unmanaged container does not need", health.OK, "")
	// The .conf's unmanaged against a detected alpine: the conf wins,
	// and differs from what PVE would detect.
	healthtest.Want(t, out, "matches the recorded ostype", health.Fail, "the .conf records unmanaged")

	debian := strings.Replace(alpineConf, "ostype: alpine", "ostype: debian", 1)
	out = checkTemplate(t, handTemplate(t, baseMembers(), debian, false), health.Options{})
	healthtest.Want(t, out, "matches the recorded ostype", health.Fail, `PVE detects alpine (os-release ID "alpine"), but the .conf records debian`)

	// An os-release PVE does not know, no marker file, nothing recorded.
	odd := []testbundle.Member{testbundle.DirM("./"), testbundle.DirM("./etc/"), testbundle.FileM("./etc/os-release", "ID=plan9\n"), testbundle.DirM("./sbin/")}
	p := handTemplate(t, odd, alpineConf, false)
	dir := filepath.Dir(p)
	os.Remove(filepath.Join(dir, "hand.conf"))
	os.Remove(filepath.Join(dir, "hand.json"))
	out = checkTemplate(t, p, health.Options{})
	healthtest.Want(t, out, "matches the recorded ostype", health.Warn, `os-release ID "plan9" is not a distribution PVE manages`)
	healthtest.Find(t, out, "no sidecars")
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

	out := checkTemplate(t, res.Template, health.Options{})
	healthtest.Want(t, out, "leftover "+name, health.Warn, "temporary file of an interrupted write (7 B)")
	out = checkTemplate(t, res.Template, health.Options{Repair: true, InUse: func(p string) bool { return p == f.Name() }})
	r := healthtest.Want(t, out, "leftover "+name, health.OK, "")
	if r.Repaired || !strings.Contains(r.Check, "left alone") {
		t.Errorf("in use: %+v", r)
	}
	out = checkTemplate(t, res.Template, health.Options{Repair: true})
	if r := healthtest.Find(t, out, "leftover "+name); !r.Repaired || r.Status != health.OK {
		t.Errorf("not repaired: %+v", r)
	}
	if _, err := os.Stat(f.Name()); err == nil {
		t.Error("the leftover is still there")
	}
	healthtest.AllOK(t, checkTemplate(t, res.Template, health.Options{}))
}

func TestCheckTemplateName(t *testing.T) {
	healthtest.Want(t, checkTemplate(t, filepath.Join(t.TempDir(), "x.tar"), health.Options{}), "template name", health.Fail, "does not end in")
	healthtest.Want(t, checkTemplate(t, filepath.Join(t.TempDir(), "x.tar.zst"), health.Options{}), "template file", health.Fail, "no such file")
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
	out := checkBundle(t, b.Dir, health.Options{})
	healthtest.AllOK(t, out)
	healthtest.Find(t, out, "config.json is valid against the runtime-spec 1.2.1 schema")
	healthtest.Find(t, out, "every mount maps to PVE")
	healthtest.Find(t, out, "process: an application container, entrypoint /app/run.sh sleep infinity")
	// The config.json itself names the bundle too.
	healthtest.AllOK(t, checkBundle(t, filepath.Join(b.Dir, "config.json"), health.Options{}))

	t.Run("relative bind source", func(t *testing.T) {
		editSpec(t, b.Dir, func(m map[string]any) {
			m["mounts"] = append(m["mounts"].([]any), map[string]any{"destination": "/srv", "type": "bind", "source": "srv", "options": []string{"rbind"}})
		})
		out := checkBundle(t, b.Dir, health.Options{})
		healthtest.Want(t, out, "every mount maps to PVE", health.Fail, `source: bind source "srv" is relative`)
		healthtest.Find(t, out, "valid against the runtime-spec")
	})
	t.Run("schema", func(t *testing.T) {
		editSpec(t, b.Dir, func(m map[string]any) { m["process"].(map[string]any)["user"] = map[string]any{"uid": -1, "gid": 0} })
		healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "schema", health.Fail, "process.user.uid: Must be greater than or equal to 0")
		editSpec(t, b.Dir, func(m map[string]any) { m["ociVersion"] = 2 })
		healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "schema", health.Fail, "ociVersion: Invalid type. Expected: string, given: integer")
	})
	t.Run("syntax", func(t *testing.T) {
		os.WriteFile(filepath.Join(b.Dir, "config.json"), []byte("{\n  \"ociVersion\": \"1.2.0\",\n  oops\n}"), 0o644)
		healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "config.json parses", health.Fail, "line 3, column")
	})
}

func TestCheckBundleRootAndProcess(t *testing.T) {
	b := unpack(t, corpusCase(t, "alpine-app"), false)
	editSpec(t, b.Dir, func(m map[string]any) { m["root"] = map[string]any{"path": "nowhere"} })
	healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "root path exists", health.Fail, "nowhere: no such file or directory")

	editSpec(t, b.Dir, func(m map[string]any) {
		m["root"] = map[string]any{"path": "rootfs"}
		m["process"].(map[string]any)["args"] = []string{"/opt/missing"}
	})
	healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "process maps to PVE", health.Fail, "the entrypoint /opt/missing does not exist")

	editSpec(t, b.Dir, func(m map[string]any) {
		m["process"].(map[string]any)["args"] = []string{"/app/run.sh"}
		m["process"].(map[string]any)["env"] = []string{"BROKEN"}
	})
	healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "process maps to PVE", health.Fail, `process.env[0] "BROKEN" is not NAME=VALUE`)
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
	healthtest.Want(t, checkBundle(t, b.Dir, health.Options{}), "leftover "+name, health.Warn, "temporary directory of an interrupted write (5 B)")
	r := healthtest.Find(t, checkBundle(t, b.Dir, health.Options{Repair: true}), "leftover "+name)
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
	out, err := convert.CheckDir(context.Background(), dir, health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	healthtest.Want(t, out, "leftover .x.tar.zst", health.Warn, "interrupted write")
	for _, r := range out {
		if r.Status != health.OK && !strings.Contains(r.Check, "leftover") {
			t.Errorf("%+v", r)
		}
	}
	if healthtest.Find(t, out, "size and sha256 match").Target != res.Template {
		t.Error("the template's results do not name it")
	}
}

// The schema embedded from schema/ is the runtime-spec module's (the
// version in go.mod): the files config-schema.json needs, no more, each
// byte for byte as the module has it, with the module's LICENSE and a
// README naming the version; and it judges the module's own examples as
// the module does.
func TestRuntimeSpecSchema(t *testing.T) {
	goTool := testenv.RequireTool(t, "go")
	out, err := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}} {{.Version}}", "github.com/opencontainers/runtime-spec").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	mod, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	read := func(p string) []byte {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// What config-schema.json refers to, file by file.
	reRef := regexp.MustCompile(`"\$ref"\s*:\s*"([^"#]+)#`)
	need := map[string]bool{}
	for todo := []string{"config-schema.json"}; len(todo) > 0; {
		name := todo[0]
		todo = todo[1:]
		if need[name] {
			continue
		}
		need[name] = true
		for _, m := range reRef.FindAllStringSubmatch(string(read(filepath.Join(mod, "schema", name))), -1) {
			todo = append(todo, m[1])
		}
	}
	embedded, _ := filepath.Glob(filepath.Join("schema", "*.json"))
	have := map[string]bool{}
	for _, p := range embedded {
		have[filepath.Base(p)] = true
	}
	for name := range need {
		if !have[name] {
			t.Errorf("schema/%s is missing: config-schema.json refers to it (copy it from %s)", name, filepath.Join(mod, "schema"))
		}
	}
	for name := range have {
		if !need[name] {
			t.Errorf("schema/%s is not part of config.json's schema: remove it", name)
		}
	}
	for _, name := range append(embedded, filepath.Join("schema", "LICENSE")) {
		want := filepath.Join(mod, "schema", filepath.Base(name))
		if filepath.Base(name) == "LICENSE" {
			want = filepath.Join(mod, "LICENSE")
		}
		if !bytes.Equal(read(name), read(want)) {
			t.Errorf("%s differs from the runtime-spec module's %s: copy it again", name, want)
		}
	}
	if !strings.Contains(string(read(filepath.Join("schema", "README.md"))), "**"+version+"**") {
		t.Errorf("schema/README.md does not name the module's version %s", version)
	}

	for _, verdict := range []string{"good", "bad"} {
		files, _ := filepath.Glob(filepath.Join(mod, "schema", "test", "config", verdict, "*.json"))
		for _, file := range files {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), read(file), 0o644)
			res := checkBundle(t, dir, health.Options{})
			valid := false
			for _, r := range res {
				if strings.Contains(r.Check, "schema") && r.Status == health.OK {
					valid = true
				}
			}
			if valid != (verdict == "good") {
				t.Errorf("%s/%s: valid=%v\n%s", verdict, filepath.Base(file), valid, healthtest.Dump(res))
			}
		}
	}
}
