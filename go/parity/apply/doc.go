// Package apply checks layerdiff's apply against containerd's own archive.Apply.
package apply
