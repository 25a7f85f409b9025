package pvetest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
)

// TestStandInArgvsAgreeWithPVE runs `pct set` with a table of options,
// valid and not, through the stand-in playing each PVE version the oracle
// holds and through that version's own pct CLI (option parsing, API
// schema, mount point parsing): both must accept, or both refuse, each.
// (Config lines: the stand-in judges them with lxc.ParseFor, proven equal
// to PVE's parser by lxc TestConfigModelAgreesWithPVE. Repeated options:
// TestStandInCluster checks the stand-in keeps only the last, as pct.)
func TestStandInArgvsAgreeWithPVE(t *testing.T) {
	o := pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	host := s.Path("srv/data")
	if err := os.MkdirAll(host, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"--memory", "8"}, {"--memory", "512"}, {"--swap", "0"}, {"--swap", "-1"}, {"--cores", "0"}, {"--cores", "2"},
		{"--hostname", "bad_name"}, {"--hostname", "ok.example"}, {"--ostype", "foo"}, {"--ostype", "alpine"},
		{"--tty", "9"}, {"--tty", "2"}, {"--arch", "sparc"}, {"--cmode", "console"}, {"--cmode", "bogus"},
		{"--onboot", "maybe"}, {"--onboot", "1"}, {"--features", "nesting=1"}, {"--features", "bogus=1"},
		{"--entrypoint", "/app/run.sh 'sleep infinity'"}, {"--env", "A=1"}, {"--env", "APP.MODE=prod"}, {"--env", "my-var=1"},
		{"--mp0", host + ",mp=/a/../b"}, {"--mp0", host + ",mp=/data,ro=1"}, {"--mp0", host + ",mp=/data,keepattrs=1"},
		{"--mp0", host + ",mp=/data,bogus=1"}, {"--mp0", host}, {"--mp256", host + ",mp=/x"},
		{"--net0", "name=eth0,bridge=vmbr0,ip=dhcp"}, {"--net0", "bridge=vmbr0"}, {"--net0", "name=eth0,bridge=vmbr0,host-managed=1"},
		{"--description", "two\nlines"}, {"--nosuchoption", "1"},
	}
	const conf = "arch: amd64\nhostname: ct\nmemory: 512\nostype: alpine\nrootfs: local-lvm:vm-100-disk-0,size=1G\nunprivileged: 1\n"
	for _, v := range pveoracle.Versions {
		env := append(append([]string(nil), s.Env...), "PVE_VERSION="+v.PVE+".0")
		agree := 0
		for _, opts := range cases {
			if err := os.MkdirAll(filepath.Dir(s.ConfigPath("pve", 100)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.ConfigPath("pve", 100), []byte(conf), 0o640); err != nil {
				t.Fatal(err)
			}
			argv := append([]string{"set", "100"}, opts...)
			cmd := s.Command(context.Background(), "pct", argv...)
			cmd.Env = env
			var errb strings.Builder
			cmd.Stderr = &errb
			err := cmd.Run()
			standIn := err == nil
			if err != nil && !strings.HasPrefix(errb.String(), "400 ") {
				t.Errorf("PVE %s stand-in: pct %q failed other than by a parameter error: %s", v.PVE, argv, errb.String())
				continue
			}
			rejected, out := o.RejectsArgv(t, v, append([]string{"pct"}, argv...)...)
			switch {
			case standIn && rejected:
				t.Errorf("PVE %s: the stand-in accepts pct %q, PVE refuses it:\n%s", v.PVE, argv, out)
			case !standIn && !rejected:
				t.Errorf("PVE %s: the stand-in refuses pct %q (%s), PVE accepts it", v.PVE, argv, strings.TrimSpace(errb.String()))
			default:
				agree++
			}
		}
		t.Logf("PVE %s: the stand-in and PVE agree on %d of %d pct set option sets", v.PVE, agree, len(cases))
	}
}
