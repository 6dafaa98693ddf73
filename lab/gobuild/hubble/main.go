// Command hubble is the upstream Hubble CLI, built unchanged from the
// github.com/cilium/cilium module at the tag pinned in ../build-hubble.sh.
// Septum builds it only to prove wire compatibility against the real client.
package main

import (
	"fmt"
	"os"

	hubblecmd "github.com/cilium/cilium/hubble/cmd"
)

func main() {
	if err := hubblecmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
