package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pveapi"
)

// remoteFlags reach a PVE cluster through its HTTP API instead of
// running its tools on this host. No secret is ever a flag value: other
// users read argv in the process list.
type remoteFlags struct {
	url, tokenFile, user, passwordFile, fingerprint string
}

// remoteEnv is the default of --remote.
const remoteEnv = "NEXCAGE_PVE_URL"

func registerRemoteFlags(fs *pflag.FlagSet, r *remoteFlags) {
	fs.StringVar(&r.url, "remote", "", "deploy through the Proxmox VE HTTP API at this URL (https://HOST[:8006]) instead of on this host (default $"+remoteEnv+")")
	fs.StringVar(&r.tokenFile, "token-file", "", "with --remote: file whose first line is an API token USER@REALM!TOKENID=SECRET (default $PVE_API_TOKEN)")
	fs.StringVar(&r.user, "remote-user", "", "with --remote: log in as USER@REALM (a ticket) instead of with a token; needs --remote-password-file")
	fs.StringVar(&r.passwordFile, "remote-password-file", "", "with --remote-user: file whose first line is the user's password")
	fs.StringVar(&r.fingerprint, "fingerprint", "", "with --remote: trust the node's certificate with this SHA-256 fingerprint (AA:BB:...) instead of the system CAs")
}

// remoteURL is --remote, else $NEXCAGE_PVE_URL.
func (r remoteFlags) remoteURL() string {
	if r.url != "" {
		return r.url
	}
	return os.Getenv(remoteEnv)
}

// pveHost is the PVE host the command talks to: the API of --remote, or
// this machine's tools.
func pveHost(e *env) (*pct.Host, error) {
	r := e.deploy.remote
	u := r.remoteURL()
	if u == "" {
		for name, v := range map[string]string{"token-file": r.tokenFile, "remote-user": r.user, "remote-password-file": r.passwordFile, "fingerprint": r.fingerprint} {
			if v != "" {
				return nil, usagef("--%s needs --remote URL (or $%s)", name, remoteEnv)
			}
		}
		return pct.NewHost(pveRoot()), nil
	}
	cfg := pveapi.Config{URL: u, Fingerprint: r.fingerprint, Progress: e.progress}
	switch {
	case r.user != "" && r.tokenFile != "":
		return nil, usagef("--token-file and --remote-user exclude each other: log in with a token or a user's password")
	case r.user != "":
		if r.passwordFile == "" {
			return nil, usagef("--remote-user needs --remote-password-file (a password is never a flag value)")
		}
		pw, err := pveapi.ReadPasswordFile(r.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--remote-password-file: %w", err)
		}
		cfg.User, cfg.Password = r.user, pw
	case r.passwordFile != "":
		return nil, usagef("--remote-password-file needs --remote-user")
	case r.tokenFile != "":
		t, err := pveapi.ReadTokenFile(r.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		cfg.Token = t
	default:
		t, ok, err := pveapi.TokenFromEnv()
		if err != nil {
			return nil, fmt.Errorf("$PVE_API_TOKEN: %w", err)
		}
		if !ok {
			return nil, usagef("--remote needs credentials: an API token in --token-file or $PVE_API_TOKEN, or --remote-user with --remote-password-file")
		}
		cfg.Token = t
	}
	c, err := pveapi.New(cfg)
	if err != nil {
		return nil, err
	}
	h := pct.NewRemoteHost(c)
	h.Endpoint = u
	h.APIUser = cfg.User
	if cfg.Token != "" {
		if t, err := pveapi.ParseToken(cfg.Token); err == nil {
			h.APIUser = t.User + "@" + t.Realm + "!" + t.ID
		}
	}
	return h, nil
}

// remoteHint adds the flags and commands that fix an API failure.
func remoteHint(e *env, err error) error {
	var rl *pct.RawLinesError
	var xe *pct.RemoteExecError
	if errors.As(err, &xe) {
		return suffixHint(err, "upgrade on the host (without --remote) to run --health-cmd, or leave --health-cmd out")
	}
	if errors.As(err, &rl) {
		way := "deploy it on the host (without --remote), where nexcage writes them into the config"
		if e.hasFlag("discard-rootfs-changes") {
			return suffixHint(err, "upgrade it on the host (without --remote), where nexcage writes them into the config")
		}
		if rl.Version.AppContainers() {
			way = "export the image with `nexcage convert --format oci-archive IMAGE -o FILE.tar` and let PVE's own OCI import create the container, or " + way
		}
		return suffixHint(err, way)
	}
	var te *pveapi.TaskError
	if errors.As(err, &te) && e != nil && e.verbose && len(te.Log) > 0 {
		// The task log's tail is PVE's own output, as pct's is for
		// commands run on the host.
		return withHint(err, err.Error()+"\ntask log of "+te.UPID+" (last lines):\n"+strings.Join(te.Log, "\n"))
	}
	var pe *pct.Error
	if errors.As(err, &pe) && pe.Param == "mount" && errors.Is(err, pct.ErrPermission) {
		return suffixHint(err, "log in with --remote-user root@pam --remote-password-file FILE, or deploy on the host without --remote")
	}
	var ae *pveapi.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Kind {
	case pveapi.Unauthorized:
		return suffixHint(err, "check the API token (--token-file or $PVE_API_TOKEN: USER@REALM!TOKENID=SECRET, not expired, not removed), or --remote-user and its --remote-password-file")
	case pveapi.Forbidden:
		if ae.Privilege == "" {
			return err
		}
		who := "--tokens 'USER@REALM!TOKENID'"
		if u := e.deploy.remote.user; u != "" {
			who = "--users " + u
		} else if t := tokenName(e); t != "" {
			who = "--tokens '" + t + "'"
		}
		priv := strings.Split(ae.Privilege, "|")[0]
		return suffixHint(err, fmt.Sprintf("on the host: `pveum role add NexcageDeploy --privs %s` (or `pveum role modify NexcageDeploy --privs %s --append 1`) and `pveum acl modify %s %s --roles NexcageDeploy`", priv, priv, ae.ACLPath, who))
	case pveapi.TLS:
		if ae.Fingerprint != "" {
			return suffixHint(err, "if that is your node's certificate (`pvenode cert info` on the node shows its fingerprint), pass --fingerprint "+ae.Fingerprint)
		}
	case pveapi.Connection, pveapi.Timeout:
		if ae.Status == 0 {
			return suffixHint(err, "check --remote (or $"+remoteEnv+") and that this machine reaches the node's port 8006")
		}
	case pveapi.BadConfig:
		return suffixHint(err, "check --remote, --token-file or $PVE_API_TOKEN")
	}
	return err
}

// tokenName is the token's USER@REALM!TOKENID, without its secret.
func tokenName(e *env) string {
	var s string
	if f := e.deploy.remote.tokenFile; f != "" {
		s, _ = pveapi.ReadTokenFile(f)
	} else {
		s, _, _ = pveapi.TokenFromEnv()
	}
	t, err := pveapi.ParseToken(s)
	if err != nil {
		return ""
	}
	return t.User + "@" + t.Realm + "!" + t.ID
}
