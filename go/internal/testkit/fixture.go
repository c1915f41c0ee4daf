package testkit

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/layerdiff/layerdiff/go/internal/fixture"
)

// ContentStore opens a real containerd content store (fixture.OpenStore) in a fresh
// temporary directory, closed when t ends, and a context in a test namespace.
func ContentStore(t testing.TB) (context.Context, content.Store) {
	t.Helper()
	return ContentStoreIn(t, t.TempDir())
}

// ContentStoreIn is ContentStore in dir (the benchmarks keep theirs on a tmpfs).
func ContentStoreIn(t testing.TB, dir string) (context.Context, content.Store) {
	t.Helper()
	db, closeDB, err := fixture.OpenStore(dir)
	if err != nil {
		t.Fatalf("content store in %s: %v", dir, err)
	}
	t.Cleanup(func() { closeDB() })
	return namespaces.WithNamespace(context.Background(), "layerdiff-test"), db.ContentStore()
}

// CopyTree copies src into dst keeping everything a layer carries (fixture.CopyTree).
func CopyTree(t testing.TB, src, dst string) {
	t.Helper()
	if err := fixture.CopyTree(src, dst); err != nil {
		t.Fatal(err)
	}
}
