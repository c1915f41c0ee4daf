// Command containerd-layerdiff is containerd's own daemon with the layerdiff diff plugin
// linked in: the "fork" a containerd build gets from one blank import. The e2e tests build it
// into a temporary directory; it is not meant to be installed from here.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	_ "github.com/layerdiff/layerdiff/go/plugin"
)

// main is containerd's cmd/containerd/main.go, plus the blank import above.
func main() {
	ctx := context.Background()
	if err := command.App().Run(ctx, os.Args); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "containerd:", err)
		os.Exit(1)
	}
}
