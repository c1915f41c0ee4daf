// Package tarread fuzzes layerdiff's tar reader against Go's archive/tar (the reader
// containerd's archive.Apply uses): for any input bytes, `layerdiff ls --json` lists the
// headers Go's reader yields, and fails where it fails. Test-only.
package tarread
