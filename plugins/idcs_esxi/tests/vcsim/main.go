// Command vcsim-idcs runs the govmomi vSphere simulator (a vCenter or a standalone ESXi
// model) for the idcs_esxi engine's tests.
//
// It listens on 127.0.0.1 with one user and password, puts the ISO files named by -iso
// on the first datastore, prints the SDK URL (without credentials) on its first line of
// output and runs until SIGTERM or SIGINT, then removes the model's temporary files.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := flag.String("model", "vpx", "vpx (a vCenter) or esx (a standalone ESXi host)")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("user", "root", "login user")
	pass := flag.String("pass", "", "login password (required)")
	vms := flag.Int("vms", 2, "virtual machines per host made with the model")
	useTLS := flag.Bool("tls", true, "serve HTTPS (self-signed certificate)")
	isos := flag.String("iso", "", "comma-separated ISO paths created on the first datastore (e.g. iso/debian-12.iso)")
	flag.Parse()
	if *pass == "" {
		fmt.Fprintln(os.Stderr, "vcsim-idcs: -pass is required")
		os.Exit(2)
	}

	var m *simulator.Model
	switch *model {
	case "vpx":
		m = simulator.VPX()
	case "esx":
		m = simulator.ESX()
	default:
		fmt.Fprintf(os.Stderr, "vcsim-idcs: unknown -model %q\n", *model)
		os.Exit(2)
	}
	m.Machine = *vms
	if err := m.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-idcs: create:", err)
		os.Exit(1)
	}
	defer m.Remove()

	if err := putISOs(*isos); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-idcs: iso:", err)
		os.Exit(1)
	}

	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		m.Service.TLS = new(tls.Config)
	}
	server := m.Service.NewServer()
	defer server.Close()

	shown := *server.URL
	shown.User = nil
	fmt.Println(shown.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

// putISOs writes a small file for each name into the first datastore's folder, so that
// the datastore browser finds it like an uploaded installer image.
func putISOs(list string) error {
	if list == "" {
		return nil
	}
	stores := simulator.Map.All("Datastore")
	if len(stores) == 0 {
		return fmt.Errorf("the model has no datastore")
	}
	root := stores[0].(*simulator.Datastore).Info.GetDatastoreInfo().Url
	for _, name := range strings.Split(list, ",") {
		path := filepath.Join(root, filepath.Clean("/"+name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte("idcs test iso\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}
