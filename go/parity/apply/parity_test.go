package apply

import (
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
)

func TestPlaceholder(t *testing.T) { _ = archive.Apply }
