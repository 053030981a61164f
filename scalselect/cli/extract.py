"""``python -m scalselect extract``: the representations of one shard of a dataset.

Writes a complete shard directory in the :mod:`scalselect.extract.features` format
(``features.npy``, ``rows.parquet``, then ``manifest.json``) with one row per sample of
the shard, failures included with their reason, and logs the counts per status.
Only the shard's records are read. Every sample's result is kept in the feature store
under ``--cache-dir`` (:mod:`scalselect.extract.store`; several directories: look-ups search
them all, new results go to the first one that can be written), keyed by the sample's content
(messages, image bytes) and the model's files and result-affecting settings: samples
already stored are reused whatever their shard or position, a killed job resumes where
it stopped, and the manifest counts ``samples_computed`` and ``samples_reused`` (and
``samples_recomputed_damaged``: computed again because their stored copy was damaged).
Several processes (``accelerate launch --multi_gpu --num_processes N -m
scalselect extract ...``) share the work of one shard.
"""

from __future__ import annotations

import argparse

HELP = "Extract the representations (first decoder layer by default) of one shard of a dataset."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect import settings
    from scalselect.data.records import FORMAT_CHOICES
    from scalselect.settings import ExtractSettings

    parser.add_argument("--model", required=True, help="Model directory (or a name in the local Hugging Face cache).")
    parser.add_argument("--dataset", required=True, help="The filtered dataset (JSON array or JSON Lines).")
    parser.add_argument("--image-root", default=".", help="Directory relative image paths are joined to.")
    parser.add_argument("--index", help="The dataset's index (filter --index): the job seeks to its shard's records.")
    parser.add_argument("--out", required=True, help="Shard directory to write.")
    parser.add_argument("--shard", type=int, default=0, help="Which shard (0-based) of --num-shards.")
    parser.add_argument("--num-shards", type=int, default=1, help="Number of contiguous shards the dataset is cut into.")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="Record format (auto: detected from the shard's records).")
    declared = settings.declared(ExtractSettings)
    for title, changes in (("settings that change results (part of the store key)", True),
                           ("settings that do not change results", False)):
        names = [name for name, s in declared.items() if s.changes_results is changes and s.option]
        settings.add_arguments(parser.add_argument_group(title), ExtractSettings, *names)


def run(args: argparse.Namespace) -> int:
    from scalselect import settings
    from scalselect.errors import UserError
    from scalselect.extract.shard import Job, extract_shard
    from scalselect.settings import ExtractSettings

    if args.num_shards < 1:
        raise UserError(f"--num-shards must be at least 1, got {args.num_shards}")
    if not 0 <= args.shard < args.num_shards:
        raise UserError(f"--shard {args.shard} is not in 0..{args.num_shards - 1}")
    job = Job(
        dataset=args.dataset,
        image_root=args.image_root,
        model=args.model,
        out=args.out,
        settings=settings.from_arguments(ExtractSettings, args),
        shard=args.shard,
        num_shards=args.num_shards,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        chunk_size=args.chunk_size,
        cache_dirs=tuple(args.cache_dirs),
        record_format=args.format,
        index=args.index,
    )
    extract_shard(job)
    return 0
