// Package ls checks `layerdiff ls --json` against Go's archive/tar (the reader containerd's
// archive.Apply uses) reading the same bytes: the same entries with the same type, name, size,
// link, mode, owners, times, device numbers, xattr names and whiteout marks, or both failing.
// The tests use the CLI from $LAYERDIFF_BIN or <repo>/target/release.
package ls
