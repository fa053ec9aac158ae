"""Read an offline wandb run's summary back, without a server.

wandb 0.31's core writes offline runs as a transaction log (``offline-run-*/run-<id>.wandb``)
and no ``files/wandb-summary.json``; ``wandb sync`` later uploads the log. The log uses the
LevelDB log format (32 KiB blocks, records with a 7-byte header: crc32c, length, type) after a
7-byte ``:W&B`` header, and each record is a ``wandb_internal_pb2.Record``. This reads the
summary updates (and the last history values) so a user or a test can check what a run will
show once synced:

    python -m ditlab.training.wandb_offline runs/<run>

Why a parser of wandb's own format: wandb has no public API that reads an offline run without a
server (``wandb.Api`` needs one; ``wandb sync --view`` prints text). The reader is therefore kept
isolated: nothing in the library imports it (tests and users do), it touches only the log framing
and the generated ``wandb.proto`` messages, and pyproject.toml bounds wandb to the versions it was
checked against.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_run_files(run_dir: str | Path) -> list[Path]:
    """The transaction logs of the offline wandb runs under ``<run_dir>/wandb/``, oldest first."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))


def iter_records(path: str | Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # trailer too small for a header: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # padding to the end of the block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """``{"summary", "history" (last value per key), "config", "run" (id, name, group, tags), "complete"
    (the run was finished)}`` of one offline run."""
    from wandb.proto import wandb_internal_pb2 as pb  # lazy: wandb is an optional extra

    summary: dict[str, Any] = {}
    history: dict[str, Any] = {}
    config: dict[str, Any] = {}
    run: dict[str, Any] = {}
    complete = False
    for raw in iter_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        complete = complete or kind == "exit"  # written when the run was finished
        if kind == "run":
            run = {
                "id": record.run.run_id,
                "name": record.run.display_name,
                "group": record.run.run_group,
                "tags": list(record.run.tags),
            }
        if kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            for item in updates:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"summary": summary, "history": history, "config": config, "run": run, "complete": complete}


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        sys.exit("usage: python -m ditlab.training.wandb_offline <run dir or .wandb file>")
    target = Path(args[0])
    files = [target] if target.is_file() else offline_run_files(target)
    if not files:
        sys.exit(f"no offline wandb run under {target}/wandb/")
    print(json.dumps(read_offline_run(files[-1])["summary"], indent=2, default=str))


if __name__ == "__main__":
    main()
