package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// TestRemoteScripts runs the scripts of testdata/script/remote: deploy,
// create, check and list --containers through the PVE HTTP API of the
// stand-in (two nodes, a shared storage, real LXC underneath), each
// against its own cluster. Every request of every script must have been
// judged by PVE's own API schema (API.CheckJudged), and no token secret
// may appear in any output (nosecret after each command), in the
// server's request log, in a CT config or in a file the script left.
func TestRemoteScripts(t *testing.T) {
	testenv.RequireRoot(t)
	pveoracle.Require(t)
	runStandInScripts(t, "remote", func(e *testscript.Env, s *pvetest.StandIn) error {
		s.AddSharedStorage(t, "shared")
		api := s.StartAPI(t, pvetest.APIOptions{Env: scriptAPIEnv(e)})
		full := api.AddToken(t, "ci@pve!deploy", map[string][]string{"/": {"*"}})
		// No Datastore.AllocateTemplate: it may not upload.
		noUpload := api.AddToken(t, "ci@pve!noupload", map[string][]string{"/": {"VM.Allocate", "VM.Config.Disk", "VM.Config.Options", "VM.Config.Network", "VM.Config.CPU", "VM.Config.Memory", "VM.PowerMgmt", "Datastore.AllocateSpace", "Datastore.Audit", "Sys.Audit", "VM.Audit", "SDN.Use"}})
		// The privileges README.md's CI example grants.
		least := api.AddToken(t, "ci@pve!least", map[string][]string{"/": readmePrivileges(t)})
		// root@pam logs in with a password (a ticket): only it may
		// bind host directories.
		var rb [12]byte
		rand.Read(rb[:])
		rootPW := hex.EncodeToString(rb[:])
		api.AddUser(t, "root@pam", rootPW, nil)
		if err := os.WriteFile(filepath.Join(e.WorkDir, "root-pw"), []byte(rootPW+"\n"), 0o600); err != nil {
			return err
		}
		// The containers' root password goes in the create's body only.
		rand.Read(rb[:])
		ctPW := "ct-" + hex.EncodeToString(rb[:])
		if err := os.WriteFile(filepath.Join(e.WorkDir, "ct-pw"), []byte(ctPW+"\n"), 0o600); err != nil {
			return err
		}
		secrets := []string{rootPW, ctPW}
		for name, hdr := range map[string]string{"token": full, "noupload-token": noUpload, "least-token": least} {
			tok := strings.TrimPrefix(hdr, "PVEAPIToken=")
			_, secret, _ := strings.Cut(tok, "=")
			secrets = append(secrets, secret)
			if err := os.WriteFile(filepath.Join(e.WorkDir, name), []byte(tok+"\n"), 0o600); err != nil {
				return err
			}
		}
		e.Values["secrets"] = secrets
		e.Setenv("NEXCAGE_PVE_URL", api.URL)
		e.Setenv("NEXCAGE_PVE_URL_SAVED", api.URL)
		e.Setenv("FINGERPRINT", api.Fingerprint)
		e.Setenv("API_LOG", api.LogPath)
		e.Setenv("PVE_API_TOKEN", strings.TrimPrefix(full, "PVEAPIToken="))
		e.Defer(func() {
			if n := api.CheckJudged(t); n == 0 {
				t.Errorf("%s: no API request was made", filepath.Base(e.WorkDir))
			}
			// The secret never reaches a log, a config or a file left.
			for _, root := range []string{e.WorkDir, filepath.Dir(api.LogPath), s.Path("etc/pve")} {
				filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
					// The token files and the server's own credentials hold it.
					if err != nil || !fi.Mode().IsRegular() || p == filepath.Join(e.WorkDir, "token") || p == filepath.Join(e.WorkDir, "noupload-token") || p == filepath.Join(e.WorkDir, "root-pw") || p == filepath.Join(e.WorkDir, "least-token") || p == filepath.Join(e.WorkDir, "ct-pw") || strings.Contains(p, "/etc/pve/priv/") {
						return nil
					}
					b, _ := os.ReadFile(p)
					for _, sec := range secrets {
						if bytes.Contains(b, []byte(sec)) {
							t.Errorf("%s: the token secret is in %s", filepath.Base(e.WorkDir), p)
						}
					}
					return nil
				})
			}
		})
		return nil
	}, map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"exits":     cmdExits,
		"mkimage":   cmdMkimage,
		"nosecret":  cmdNoSecret,
		"mkapp":     cmdMkapp,
		"mkversion": cmdMkversion,
	})
}

// apiEnvRE is a script's line "# api-env: NAME=VALUE": the API server
// runs with it (PVE_VERSION=9.2.0 plays PVE 9.2, whose schema then judges
// every request). The server's version is fixed at its start, so it is
// the script's to say before it runs.
var apiEnvRE = regexp.MustCompile(`(?m)^# api-env: ([A-Z_]+=\S*)$`)

// scriptAPIEnv is the api-env of the script e runs (testscript names its
// work directory script-NAME).
func scriptAPIEnv(e *testscript.Env) []string {
	name := strings.TrimPrefix(filepath.Base(e.WorkDir), "script-")
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "script", "remote", name+".txtar"))
	if err != nil {
		return nil
	}
	var env []string
	for _, m := range apiEnvRE.FindAllSubmatch(b, -1) {
		env = append(env, string(m[1]))
	}
	return env
}

// nosecret: the last command's stdout and stderr hold no token secret,
// root@pam's password or the containers' root password.
func cmdNoSecret(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: nosecret")
	}
	secrets, _ := ts.Value("secrets").([]string)
	if len(secrets) == 0 {
		ts.Fatalf("nosecret: no secrets known")
	}
	for _, f := range []string{"stdout", "stderr"} {
		out := ts.ReadFile(f)
		for _, s := range secrets {
			if strings.Contains(out, s) {
				ts.Fatalf("the token secret is in %s:\n%s", f, out)
			}
		}
	}
}

// mkapp DIR TAG: the alpine-app corpus image with only what PVE's API
// takes for an application (entrypoint, environment, a VOLUME): no
// working directory, user or stop signal, which need raw LXC lines.
func cmdMkapp(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkapp DIR TAG")
	}
	img := corpusCase(ts, "alpine-app").Image
	cf, err := img.ConfigFile()
	ts.Check(err)
	cfg := cf.Config
	cfg.WorkingDir, cfg.User, cfg.StopSignal = "", "", ""
	img, err = mutate.Config(img, cfg)
	ts.Check(err)
	appendToLayout(ts, args[0], args[1], img)
}

// readmePrivileges are the privileges of the role README.md's CI example
// creates with `pveum role add NexcageDeploy --privs "..."`: the scripts
// deploy with a token of exactly those.
func readmePrivileges(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "pveum role add NexcageDeploy --privs \"")
	privs, _, ok2 := strings.Cut(rest, "\"")
	if !ok || !ok2 {
		t.Fatal("README.md has no `pveum role add NexcageDeploy --privs \"...\"`")
	}
	return strings.Fields(privs)
}
