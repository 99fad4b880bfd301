// The pod sandbox's process on the node suite's real node: a stand-in for
// registry.k8s.io/pause (no registry here), written for the same job. It holds the pod's
// namespaces and does nothing else: it sleeps until SIGINT or SIGTERM (it is PID 1 of its
// container, so signals have no default action and must be handled), and reaps any child
// it inherits. The real one is a small static C program; this one is a static Go program.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause stand-in (ws-envoy-admission)")
		return
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case s := <-stop:
			fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", s)
			os.Exit(0)
		case <-children:
			for {
				var status syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
