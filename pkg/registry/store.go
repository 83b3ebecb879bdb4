package registry

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// containerdStore reads one namespace of a containerd through its socket.
// The gRPC connection is made lazily and comes back by itself when
// containerd (re)starts after the registry.
type containerdStore struct {
	client    *client.Client
	namespace string
}

// Containerd is the Store of a containerd's namespace (k8s.io: the CRI
// plugin's images) at address.
func Containerd(address, namespace string) (Store, error) {
	c, err := client.New(address, client.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", address, err)
	}
	return &containerdStore{client: c, namespace: namespace}, nil
}

func (s *containerdStore) ListImages(ctx context.Context) ([]images.Image, error) {
	return s.client.ImageService().List(namespaces.WithNamespace(ctx, s.namespace))
}

func (s *containerdStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	return s.client.ContentStore().ReaderAt(namespaces.WithNamespace(ctx, s.namespace), desc)
}

// chunkSize is how much of a blob one read from containerd fetches: every
// ReadAt of its content store is a gRPC call, and http.ServeContent reads
// 32 KiB at a time.
const chunkSize = 1 << 20

// chunkedReader is an io.ReadSeeker over a content.ReaderAt that reads it
// in chunks of chunkSize.
type chunkedReader struct {
	ra  content.ReaderAt
	off int64 // position of the next byte Read returns
	buf []byte
	pos int // next unread byte in buf
}

func newChunkedReader(ra content.ReaderAt) *chunkedReader { return &chunkedReader{ra: ra} }

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.pos >= len(c.buf) {
		remaining := c.ra.Size() - c.off
		if remaining <= 0 {
			return 0, io.EOF
		}
		if c.buf == nil {
			c.buf = make([]byte, chunkSize)
		}
		c.buf = c.buf[:min(int64(cap(c.buf)), remaining)]
		n, err := c.ra.ReadAt(c.buf, c.off)
		c.buf, c.pos = c.buf[:n], 0
		if n == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	n := copy(p, c.buf[c.pos:])
	c.pos += n
	c.off += int64(n)
	return n, nil
}

func (c *chunkedReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = c.off + offset
	case io.SeekEnd:
		abs = c.ra.Size() + offset
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("seek: negative position")
	}
	if abs != c.off {
		c.off, c.buf, c.pos = abs, c.buf[:0], 0
	}
	return abs, nil
}
