package pct_test

import (
	"context"
	"fmt"
	"log"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// A deploy is planned in full before anything changes on the host. An
// offline host of a given PVE version plans without a Proxmox host, as
// `nexcage deploy --dry-run --pve-version` does.
func ExampleMakePlan() {
	v, err := pct.ParseVersion("9.0")
	if err != nil {
		log.Fatal(err)
	}
	h := pct.OfflineHost(v, "pve1")
	conf, err := lxc.ParseTemplateConfig("arch: amd64\nostype: debian\nunprivileged: 1\ncmode: console\nentrypoint: /usr/bin/app\n")
	if err != nil {
		log.Fatal(err)
	}
	t := &pct.Template{VolID: "local:vztmpl/debian-12-app_1.0_amd64.tar.zst", Config: conf}
	plan, err := pct.MakePlan(context.Background(), h, t, pct.Options{VMID: 120, Hostname: "app", Memory: 512})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("CT %d, PVE %s, pve-container %s\n", plan.VMID, plan.Version, plan.Container)
	for _, c := range plan.Commands() {
		fmt.Println(c)
	}
	// Output:
	// CT 120, PVE 9.0, pve-container 6.0.9
	// pct create 120 local:vztmpl/debian-12-app_1.0_amd64.tar.zst --hostname app --memory 512 --net0 name=eth0,bridge=vmbr0,ip=dhcp --rootfs local-lvm:8 --ostype debian --arch amd64 --unprivileged 1 --description 'nexcage: template=local:vztmpl/debian-12-app_1.0_amd64.tar.zst' --cmode console
	// # append to /etc/pve/lxc/120.conf under its config lock: lxc.init.cmd: /usr/bin/app
	// # append to /etc/pve/lxc/120.conf under its config lock: lxc.signal.halt: SIGTERM
}
