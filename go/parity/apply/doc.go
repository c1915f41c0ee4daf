// Package apply checks layerdiff's apply against containerd's own archive.Apply (containerd
// 1.7's in aufs mode, through go/oracle/containerd17).
package apply
