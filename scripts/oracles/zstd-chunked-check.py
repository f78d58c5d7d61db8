#!/usr/bin/env python3
"""The `zstd-chunked` crate (scripts/oracles/zstd-chunked) against regfs's zstd:chunked fixtures
in a registry: it reads each layer of lazy/zstdchunked by its footer, TOC and tar-split, checks
every range it needs against the TOC's digest, and rebuilds the tar, whose sha256 must be the
layer's diff_id; the tampered tags it can see fail. The crate ignores annotations, chunk entries
(it reads whole files) and tarSplitDigest, so bad-toc-digest, two-tocs, no-annotation,
position-outside, overlap and bad-tarsplit are invisible to it: printed, not judged.
  zstd-chunked-check.py SUMMARY.json REGISTRY_URL ORACLE WORKDIR
Exits 1 on a difference."""
import hashlib
import json
import subprocess
import sys
import urllib.request

summary, url, oracle, work = sys.argv[1:5]
s = json.load(open(summary))["lazy"]["zstdchunked"]
must_fail = {"bad-chunk", "toc-lies", "offset-past-blob", "footer-outside"}
unseen = {"bad-toc-digest", "two-tocs", "no-annotation", "position-outside", "overlap", "bad-tarsplit"}
fail = []
for tag, t in sorted(s["tags"].items()):
    for i, layer in enumerate(t.get("layers", [])):
        if layer["toc_digest"] is None:
            continue
        path = f"{work}/{layer['digest'][7:]}"
        with urllib.request.urlopen(f"{url}/v2/{s['repo']}/blobs/{layer['digest']}") as r:
            open(path, "wb").write(r.read())
        r = subprocess.run([oracle, path], capture_output=True)
        if r.returncode == 0:
            d = "sha256:" + hashlib.sha256(r.stdout).hexdigest()
            got = "rebuilt the tar, " + ("= diff_id" if d == layer["diff_id"] else f"{d} != diff_id {layer['diff_id']}")
            good = d == layer["diff_id"]
        else:
            got, good = "error: " + r.stderr.decode(errors="replace").strip()[:200], False
        if i == 2 and tag in unseen:
            verdict = "seen"
        else:
            want_good = not (i == 2 and tag in must_fail)
            verdict = "ok" if good == want_good else "FAIL"
            if verdict == "FAIL":
                fail.append(f"{tag} layer {i}")
        print(f"{verdict}: {tag} layer {i}: {got}")
if fail:
    print("zstd-chunked-check: against the zstd-chunked crate:", ", ".join(fail), file=sys.stderr)
    sys.exit(1)
