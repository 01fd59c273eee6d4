"""What came from what, across stages: content identities of datasets and models, and the W&B artifacts
named after them.

Every stage describes what it read and what it wrote by a small JSON *manifest* (content hashes, never
the bulky files themselves) and names the artifact after the manifest's hash. A producer logs the
manifest as an output artifact and a consumer recomputes the same manifest from the files it reads and
logs it as an input; same name and same bytes are the same W&B artifact version, so after `wandb sync`
the chain reads: evaluation uses model uses dataset. The same identities go into each stage's own
outputs (a training run's `metrics.json`, an evaluation's `metrics.json`), so the lineage is on disk
even with `logger=none`.

    dataset_manifest(run_dir)   the records of a generation run: ids and record digests
    hf_dataset_manifest(dir)    any other saved HF dataset: the sha256 of its data and info files
    model_identity(path)        a model or adapter dir: the sha256 of its weights and config files
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from toolturn.core.files import atomic_write_json, cache_root
from toolturn.core.rundir import RunDir

# the files that make a model what it is; tokenizer and README files do not change what it computes
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
CONFIG_FILES = ("config.json", "adapter_config.json", "generation_config.json")
_CHUNK = 1 << 20


def canonical(manifest: dict) -> str:
    """The manifest's bytes: what is hashed and what the artifact holds (the same for every stage)."""
    return json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(canonical(manifest).encode()).hexdigest()


def artifact_name(kind: str, manifest: dict) -> str:
    """`dataset-<sha16>`, `model-<sha16>`: a name that changes exactly when the content does."""
    return f"{kind}-{manifest_sha256(manifest)[:16]}"


def dataset_manifest(run_dir: str | Path) -> dict:
    """A generation run's records as (id, record digest) pairs, sorted: the same set of dialogues gives the
    same manifest whichever worker, shard or order wrote them."""
    run = RunDir.existing(run_dir)
    pairs = sorted((r["id"], (r.get("meta") or {}).get("digest", "")) for r in run.iter_records())
    h = hashlib.sha256()
    for rid, digest in pairs:
        h.update(f"{rid}\t{digest}\n".encode())
    return {"kind": "dataset", "records": len(pairs), "sha256": h.hexdigest()}


def hf_dataset_manifest(path: str | Path) -> dict:
    """A `save_to_disk` dataset dir (e.g. a converted baseline): the hashes of its data and info files."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".arrow", ".json"))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root)}\t{file_sha256(p)}\n".encode())
    return {"kind": "dataset", "files": len(files), "sha256": h.hexdigest()}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised by (resolved path, inode, size, mtime, ctime) in the cache root, so that a
    60 GB checkpoint is read once per machine, not once per evaluation (ctime cannot be set back by a copy
    that preserves times, so a rewritten file is hashed again)."""
    path = path.resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}".encode()
                         ).hexdigest()[:32]
    memo = cache_root() / "hashes" / f"{key}.json"
    if memo.exists():
        try:
            return json.loads(memo.read_text())["sha256"]
        except (ValueError, KeyError, OSError):
            pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(memo, {"path": str(path), "size": st.st_size, "sha256": digest})
    except OSError:  # a read-only cache loses only the memo
        pass
    return digest


def model_identity(path: str | Path) -> dict:
    """The identity of a model dir (full weights) or a LoRA adapter dir: one hash over its weight and
    config files (names and contents), and each file's own hash."""
    root = Path(path).expanduser().resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and (p.name in CONFIG_FILES or
                                                                 p.suffix in WEIGHT_SUFFIXES))
    hashes = {str(p.relative_to(root)): file_sha256(p) for p in files}
    whole = hashlib.sha256("".join(f"{name}\t{h}\n" for name, h in sorted(hashes.items())).encode()).hexdigest()
    return {"kind": "adapter" if (root / "adapter_config.json").exists() else "model", "sha256": whole,
            "files": hashes}


def identity_manifest(identity: dict) -> dict:
    """What a model artifact holds: the content hash only (the same model copied elsewhere is the same)."""
    return {"kind": identity["kind"], "sha256": identity["sha256"], "files": identity["files"]}


def short(sha256: str) -> str:
    return sha256[:12]
