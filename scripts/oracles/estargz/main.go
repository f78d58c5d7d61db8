// An oracle for regfs's eStargz fixtures, on stargz-snapshotter's own estargz package (Debian's
// golang-github-containerd-stargz-snapshotter-dev 0.12.0: no innerOffset, which the fixtures
// never write; built in GOPATH mode by scripts/lazy-oracles):
//
//	estargz-oracle read BLOB TOCDIGEST   open BLOB, verify its TOC against TOCDIGEST, read and
//	                                     verify every chunk of every file; JSON on stdout
//	estargz-oracle write TAR CHUNKSIZE   the TOC JSON stargz's writer makes of TAR
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type file struct {
	Name   string `json:"name"`
	Chunks int    `json:"chunks"`
	Err    string `json:"err,omitempty"`
}

type report struct {
	Open   string `json:"open,omitempty"`
	Verify string `json:"verify,omitempty"`
	Files  []file `json:"files"`
}

func errs(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func check(blob []byte, r *estargz.Reader, v estargz.TOCEntryVerifier, ent *estargz.TOCEntry) file {
	f := file{Name: ent.Name}
	for off := int64(0); off < ent.Size; {
		ce, ok := r.ChunkEntryForOffset(ent.Name, off)
		if !ok {
			f.Err = fmt.Sprintf("no chunk at %d", off)
			return f
		}
		f.Chunks++
		if ce.Offset < 0 || ce.NextOffset() > int64(len(blob)) || ce.Offset >= ce.NextOffset() {
			f.Err = fmt.Sprintf("chunk at %d: range %d..%d outside the blob of %d", off, ce.Offset, ce.NextOffset(), len(blob))
			return f
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob[ce.Offset:ce.NextOffset()]))
		if err != nil {
			f.Err = fmt.Sprintf("chunk at %d: %v", off, err)
			return f
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			f.Err = fmt.Sprintf("chunk at %d: %v", off, err)
			return f
		}
		if _, err := io.CopyN(dv, zr, ce.ChunkSize); err != nil {
			f.Err = fmt.Sprintf("chunk at %d: %v", off, err)
			return f
		}
		if !dv.Verified() {
			f.Err = fmt.Sprintf("chunk at %d: digest mismatch", off)
			return f
		}
		off += ce.ChunkSize
	}
	return f
}

func walk(e *estargz.TOCEntry, fn func(*estargz.TOCEntry)) {
	fn(e)
	e.ForeachChild(func(_ string, c *estargz.TOCEntry) bool {
		walk(c, fn)
		return true
	})
}

func read(path, tocDigest string) report {
	blob, err := os.ReadFile(path)
	if err != nil {
		return report{Open: err.Error()}
	}
	rep := report{Files: []file{}}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		rep.Open = err.Error()
		return rep
	}
	d, err := digest.Parse(tocDigest)
	if err != nil {
		rep.Verify = err.Error()
		return rep
	}
	v, err := r.VerifyTOC(d)
	if err != nil {
		rep.Verify = errs(err)
		return rep
	}
	root, _ := r.Lookup("")
	walk(root, func(e *estargz.TOCEntry) {
		if e.Type == "reg" && e.Size > 0 {
			rep.Files = append(rep.Files, check(blob, r, v, e))
		}
	})
	return rep
}

func write(path string, chunk int) ([]byte, error) {
	in, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	var out bytes.Buffer
	w := estargz.NewWriter(&out)
	w.ChunkSize = chunk
	if err := w.AppendTar(in); err != nil {
		return nil, err
	}
	if _, err := w.Close(); err != nil {
		return nil, err
	}
	b := out.Bytes()
	off, _, err := estargz.OpenFooter(io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b[off:]))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	if _, err := tr.Next(); err != nil {
		return nil, err
	}
	return io.ReadAll(tr)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: estargz-oracle read BLOB TOCDIGEST | write TAR CHUNKSIZE")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "read":
		json.NewEncoder(os.Stdout).Encode(read(os.Args[2], os.Args[3]))
	case "write":
		n, err := strconv.Atoi(os.Args[3])
		if err == nil {
			var toc []byte
			toc, err = write(os.Args[2], n)
			os.Stdout.Write(toc)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}
