package plugin

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/layerdiff/layerdiff/go/internal/fixture"
)

// TestRegistration: the plugin is registered as a diff plugin "layerdiff" that requires
// the metadata plugin, and initialises (without a mount manager) into a differ that is
// both a Comparer and an Applier, as the diff service requires.
func TestRegistration(t *testing.T) {
	var reg *plugin.Registration
	for _, r := range registry.Graph(func(*plugin.Registration) bool { return false }) {
		if r.Type == plugins.DiffPlugin && r.ID == ID {
			r := r
			reg = &r
		}
	}
	if reg == nil {
		t.Fatalf("no %s plugin %q in the registry", plugins.DiffPlugin, ID)
	}

	db, closeDB, err := fixture.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer closeDB()

	set := plugin.NewPluginSet()
	mdReg := plugin.Registration{Type: plugins.MetadataPlugin, ID: "bolt", InitFn: func(*plugin.InitContext) (any, error) { return db, nil }}
	if err := set.Add(mdReg.Init(plugin.NewContext(context.Background(), set, nil))); err != nil {
		t.Fatal(err)
	}
	p := reg.Init(plugin.NewContext(context.Background(), set, nil))
	instance, err := p.Instance()
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, ok := instance.(interface {
		diff.Comparer
		diff.Applier
	}); !ok {
		t.Fatalf("instance %T is not a Comparer and Applier", instance)
	}
	if p.Meta.Exports["version"] == "" {
		t.Error("no version exported")
	}
}
