"""Running a stage in one process per GPU: ``python -m scalselect.launch --processes N STAGE ...``.

An ``extract`` job holding N GPUs runs N processes that share its shard. With N ≤ 1 the
stage runs in this very process, on the visible device: no launcher at all. With N ≥ 2,
accelerate's launcher starts the processes; when one of them fails, its own error is
already in the log, so the launcher's traceback (which repeats the whole command line)
is replaced by one line naming the processes that failed and their exit statuses.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("scalselect")


def launcher_arguments(processes: int, stage_args: list[str]) -> list[str]:
    """``accelerate launch`` arguments that run ``python -m scalselect STAGE_ARGS`` in
    ``processes`` processes on this machine, each launch on a free port.

    Examples
    --------
    >>> launcher_arguments(2, ["extract", "--out", "x"])[-4:]
    ['scalselect', 'extract', '--out', 'x']
    """
    return [
        "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "--module", "scalselect", *stage_args,
    ]


def launch(processes: int, stage_args: list[str]) -> int:
    """Run ``python -m scalselect STAGE_ARGS`` in ``processes`` processes; the exit status."""
    from scalselect.cli import main

    if processes <= 1:
        return main(stage_args)
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        launch_command(launch_command_parser().parse_args(launcher_arguments(processes, stage_args)))
    except ChildFailedError as error:
        failed = ", ".join(f"process {rank} (exit status {failure.exitcode})"
                           for rank, failure in sorted(error.failures.items()))
        log.error("%s failed in %s of %d; the error is logged above", stage_args[0], failed, processes)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scalselect.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, required=True,
                        help="Processes to start (one per GPU); 0 or 1 runs the stage in this process.")
    parser.add_argument("stage", nargs=argparse.REMAINDER, help="The stage and its arguments.")
    args = parser.parse_args(argv)
    if not args.stage:
        parser.error("no stage given")
    return launch(args.processes, args.stage)


if __name__ == "__main__":
    sys.exit(main())
