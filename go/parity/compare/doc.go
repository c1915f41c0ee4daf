// Package compare holds the parity tests of `layerdiff diff` against containerd's own
// archive.WriteDiff: the same tree pairs through both, byte-identical tar streams required.
// The tests run as root and use the CLI from $LAYERDIFF_BIN or <repo>/target/release.
package compare
