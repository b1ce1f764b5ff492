"""Where a checkpoint comes from: a local path or a file of a Hugging Face Hub repo (docs/models.md).

:func:`resolve_checkpoint` is the one resolver every loader goes through (``load_model``,
``tokenizer_size``, ``--finetune``, ``--tokenizer_weight``, ``export_features.py --checkpoint``):

* ``"path/to/checkpoint.pth"`` -> that path (its existence is checked by the reader, which names it);
* ``"hf://PKUDigitalHealth/HeartLang/<file>"`` or ``"hf://<org>/<repo>@<revision>/<path/in/repo>"``;
* ``repo_id="PKUDigitalHealth/HeartLang", filename="<file>"`` (and ``revision=``).

Runs fingerprint the resolved file (:func:`checkpoint_sha256`), never the spec string: the same file
given as a path or as ``hf://`` is the same input, and another revision of a Hub file is another input.

Hub files are fetched with ``huggingface_hub.hf_hub_download`` into the standard Hub cache
(``HF_HUB_CACHE`` / ``HF_HOME``); with ``HF_HUB_OFFLINE=1`` only the cache is read, and a file that is
not there is refused with the command that downloads it. ``huggingface_hub`` is optional: it is
imported only for Hub specs, with an install hint when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

HF_SCHEME = "hf://"
HUB_REPO = "PKUDigitalHealth/HeartLang"  # the authors' repo of the released checkpoints
_TRUE = {"1", "on", "yes", "true"}  # huggingface_hub's spelling of a true environment flag


def parse_hf_spec(spec: str) -> tuple[str, str, str | None]:
    """``hf://<org>/<repo>[@<revision>]/<path/in/repo>`` -> ``(repo_id, filename, revision)``."""
    rest = spec[len(HF_SCHEME) :]
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"{spec!r}: a Hub checkpoint is written hf://<org>/<repo>[@<revision>]/<file>, "
            f"e.g. hf://{HUB_REPO}/<file>.pth"
        )
    org, repo = parts[0], parts[1]
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
        if not repo or not revision:
            raise ValueError(f"{spec!r}: empty repo name or revision around '@'")
    return f"{org}/{repo}", "/".join(parts[2:]), revision


def is_hub_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(HF_SCHEME)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` read now (huggingface_hub itself reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve_checkpoint(
    spec: str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
) -> Path:
    """The local file of a checkpoint spec: a path as it is, a Hub file downloaded into (or found in) the cache."""
    if repo_id is not None or filename is not None:
        if spec is not None:
            raise ValueError("give either a checkpoint path / hf:// spec or repo_id= and filename=, not both")
        if not repo_id or not filename:
            raise ValueError("a Hub checkpoint needs both repo_id= and filename=")
        return _download(repo_id, filename, revision)
    if spec is None:
        raise ValueError(
            "no checkpoint given: pass a path, an hf://<org>/<repo>/<file> spec or repo_id=/filename="
        )
    if is_hub_spec(spec):
        repo, file, rev = parse_hf_spec(spec)
        if revision is not None and rev is not None and revision != rev:
            raise ValueError(f"{spec!r} names revision {rev!r} but revision={revision!r} was passed")
        return _download(repo, file, rev or revision)
    if revision is not None:
        raise ValueError(f"revision= applies to Hub checkpoints only, not to the local path {spec}")
    return Path(spec)


def checkpoint_sha256(spec: str | os.PathLike) -> str:
    """SHA-256 of the file a checkpoint spec resolves to (what run fingerprints and cached targets record)."""
    from utils.integrity import sha256_file

    path = resolve_checkpoint(spec)
    if not path.is_file():
        where = "" if os.fspath(spec) == os.fspath(path) else f" (resolved to {path})"
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {spec} {what}{where}")
    return sha256_file(path)


def _download(repo_id: str, filename: str, revision: str | None) -> Path:
    where = f"hf://{repo_id}{'@' + revision if revision else ''}/{filename}"
    try:
        import huggingface_hub
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as exc:
        raise ImportError(
            f"loading {where} needs the optional package huggingface_hub: "
            "pip install 'huggingface_hub>=1.0,<3' (it is listed in requirements.txt)"
        ) from exc
    offline = hub_offline()
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, local_files_only=offline, library_name="heartlang-rebuilt"
        )
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise FileNotFoundError(
            f"{where} is not in the Hub cache ({huggingface_hub.constants.HF_HUB_CACHE}) and {why}; "
            f"download it first where there is network: hf download {repo_id} {filename}"
            f"{' --revision ' + revision if revision else ''}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise FileNotFoundError(f"{where}: no such Hub repository (or it is private/gated)") from exc
    except EntryNotFoundError as exc:
        raise FileNotFoundError(
            f"{where}: the repository has no such file; list its files with: hf models ls {repo_id}"
        ) from exc
    return Path(path)
