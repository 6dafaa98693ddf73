// Command etcd is the lab's etcd server: a thin wrapper that calls etcd's own entry point, because
// `go install go.etcd.io/etcd/server/v3` fails on the replace directives in etcd's go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
