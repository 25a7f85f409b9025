package lxc_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/nexcage/nexcage/lxc"
)

// A CT config parses into typed fields and renders back in PVE's form.
func ExampleParse() {
	text := `#web server
arch: amd64
hostname: web
memory: 512
ostype: debian
unprivileged: 1
mp0: /srv/data,mp=/var/lib/data,ro=1
lxc.environment.runtime: PORT=8080
lxc.cap.drop: sys_time
`
	c, err := lxc.Parse(text)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("hostname:", c.Hostname, "ostype:", c.OSType, "unprivileged:", c.Unprivileged)
	fmt.Println("env:", c.Env)
	fmt.Println("mount:", c.MountPoints[0].Path)
	fmt.Print(c.Render())
	// Output:
	// hostname: web ostype: debian unprivileged: true
	// env: [PORT=8080]
	// mount: /var/lib/data
	// #web server
	// arch: amd64
	// hostname: web
	// memory: 512
	// mp0: /srv/data,mp=/var/lib/data,ro=1
	// ostype: debian
	// unprivileged: 1
	// lxc.environment.runtime: PORT=8080
	// lxc.cap.drop: sys_time
}

// A template's .conf is written by whoever made the image: keys that
// would run commands on the host are refused with a typed error.
func ExampleParseTemplateConfig() {
	_, err := lxc.ParseTemplateConfig("arch: amd64\nlxc.hook.pre-start: /tmp/evil\n")
	var unsafe *lxc.UnsafeConfigError
	if errors.As(err, &unsafe) {
		for _, l := range unsafe.Lines {
			fmt.Printf("line %d refused: %s\n", l.Line, l.Text)
		}
	}
	// Output:
	// line 2 refused: lxc.hook.pre-start: /tmp/evil
}
