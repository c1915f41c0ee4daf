package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// serveRegistry serves imgs as repository "e2e" (tags = the images' tags) over plain HTTP
// with the read side of the OCI distribution API, enough for `ctr images pull`; it returns
// host:port.
func serveRegistry(t *testing.T, imgs ...*testImage) string {
	t.Helper()
	manifests := map[string][]byte{} // tag or digest
	blobs := map[digest.Digest]func() ([]byte, error){}
	for _, img := range imgs {
		tag := img.name[strings.LastIndex(img.name, ":")+1:]
		manifests[tag] = img.manifest
		manifests[digest.FromBytes(img.manifest).String()] = img.manifest
		config := img.config
		blobs[digest.FromBytes(config)] = func() ([]byte, error) { return config, nil }
		for _, l := range img.layers {
			p := l.path
			blobs[l.digest] = func() ([]byte, error) { return os.ReadFile(p) }
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var data []byte
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasPrefix(r.URL.Path, "/v2/e2e/manifests/"):
			m, ok := manifests[strings.TrimPrefix(r.URL.Path, "/v2/e2e/manifests/")]
			if !ok {
				http.NotFound(w, r)
				return
			}
			data = m
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m).String())
		case strings.HasPrefix(r.URL.Path, "/v2/e2e/blobs/"):
			get, ok := blobs[digest.Digest(strings.TrimPrefix(r.URL.Path, "/v2/e2e/blobs/"))]
			if !ok {
				http.NotFound(w, r)
				return
			}
			b, err := get()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			data = b
			w.Header().Set("Content-Type", "application/octet-stream")
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(data)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
