#!/usr/bin/env python3
"""stargz-snapshotter's estargz package (scripts/oracles/estargz) against regfs's eStargz
fixtures in a registry: every layer of lazy/estargz opens, its TOC verifies against the
layer's toc.digest annotation and each chunk against its chunkDigest, except where a tampered tag
says otherwise; and stargz's own writer, given each `gzip` layer's tar, writes the same TOC entries
as regfs's writer (offsets aside: gzip implementations differ).
  estargz-check.py SUMMARY.json REGISTRY_URL ORACLE WORKDIR
Exits 1 on a difference."""
import gzip
import io
import json
import subprocess
import sys
import tarfile
import urllib.request
import zlib

summary, url, oracle, work = sys.argv[1:5]
s = json.load(open(summary))["lazy"]["estargz"]
repo = s["repo"]
TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
fail = []


def blob(digest):
    with urllib.request.urlopen(f"{url}/v2/{repo}/blobs/{digest}") as r:
        return r.read()


def read(layer):
    path = f"{work}/{layer['digest'][7:]}"
    open(path, "wb").write(blob(layer["digest"]))
    d = layer["annotations"].get(TOC_DIGEST, "sha256:" + "0" * 64)
    r = subprocess.run([oracle, "read", path, d], capture_output=True, text=True)
    if r.returncode != 0:  # Go's estargz 0.12 panics on some malformed blobs
        first = next((l for l in r.stderr.splitlines() if l.startswith("panic")), r.stderr[:200])
        return {"open": f"crashed: {first}"}
    return json.loads(r.stdout)


def errors(rep):
    e = []
    if rep.get("open"):
        e.append("open: " + rep["open"])
    if rep.get("verify"):
        e.append("verify: " + rep["verify"])
    e += [f"{f['name']}: {f['err']}" for f in rep.get("files") or [] if f.get("err")]
    return e


# what stargz's reader must say of the third (tamper) layer of each tag; None: nothing wrong
expect = {
    "control": None, "toc-lies": None, "two-tocs": None,
    "bad-chunk": "tamper/chunked.bin: chunk at 65536: digest mismatch",
    "bad-toc-digest": "verify:", "no-annotation": "verify:", "overlap": "verify:",
    "footer-outside": "open:", "offset-past-blob": "outside the blob",
}
for tag, t in sorted(s["tags"].items()):
    for i, layer in enumerate(t.get("layers", [])):
        if layer["toc_digest"] is None:
            continue
        rep = read(layer)
        errs = errors(rep)
        want = expect.get(tag) if i == 2 else None
        chunks = sum(f["chunks"] for f in rep.get("files") or [])
        ok = (not errs) if want is None else any(e.startswith(want) or want in e for e in errs)
        print(f"{'ok' if ok else 'FAIL'}: {tag} layer {i}: {len(rep.get('files') or [])} files, {chunks} chunks verified;"
              f" {'; '.join(errs) or 'no error'}")
        if not ok:
            fail.append(f"{tag} layer {i}")


def toc_of_estargz(b):
    off = int(b[-51 + 16:-51 + 32], 16)
    z = zlib.decompressobj(16 + zlib.MAX_WBITS)
    t = tarfile.open(fileobj=io.BytesIO(z.decompress(b[off:])))
    return json.load(t.extractfile(t.next()))


def strip(entries):
    return [{k: v for k, v in e.items() if k != "offset"} for e in entries if e["name"] != ".prefetch.landmark"]


for i, (mine, plain) in enumerate(zip(s["tags"]["oci"]["layers"], s["tags"]["gzip"]["layers"])):
    tar = f"{work}/plain-{i}.tar"
    open(tar, "wb").write(gzip.decompress(blob(plain["digest"])))
    theirs = json.loads(subprocess.run([oracle, "write", tar, str(256 << 10)], capture_output=True, check=True).stdout)
    ours = toc_of_estargz(blob(mine["digest"]))
    a, b = strip(ours["entries"]), strip(theirs["entries"])
    if a == b:
        print(f"ok: layer {i}: stargz's writer makes the same {len(a)} TOC entries (offsets aside)")
    else:
        fail.append(f"writer layer {i}")
        for x, y in zip(a, b):
            if x != y:
                print(f"FAIL: layer {i}: regfs {x}\n      stargz {y}")
                break
        if len(a) != len(b):
            print(f"FAIL: layer {i}: {len(a)} entries, stargz {len(b)}")
if fail:
    print("estargz-check: against stargz:", ", ".join(fail), file=sys.stderr)
    sys.exit(1)
