"""Every setting of the workflow, declared once: one frozen dataclass per stage.

Each configuration section (``validate``, ``filter``, ``extract``, ``score``, ``select``,
``plots``) is declared by one class (:data:`STAGES`). Its fields are the settings that
change the stage's results, each with its default, allowed range or choices and help
text (:func:`setting`); its ``SPEED`` class attribute declares, the same way, the
settings that change only speed (job counts, batch size, workers, GPUs, the feature
stores). Everything else is derived from these declarations:

- the command-line options of the stage's commands (:func:`add_arguments`,
  :func:`from_arguments`), with range checks that raise ``UserError``;
- the rules' params (:func:`result_keys`: only what changes results, as a change of
  params reruns the rule and everything downstream);
- the checks the workflow makes before any job (:func:`config_problems`);
- the feature store's settings key (:func:`scalselect.extract.store.settings_key` digests
  every field of :class:`ExtractSettings`, so a new field joins the key by itself);
- the README's configuration table (``scripts/config_table.py``).

``config/schema.yaml`` states the same keys, defaults and ranges for Snakemake's
validation, and marks every speed-only key "Does not change results.";
``tests/test_settings.py`` fails when it or the README disagrees with a declaration.

This module imports nothing heavy: the workflow's rule files read it.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from scalselect.errors import UserError
from scalselect.methods import METHODS

# --model-type values (the model families) and the checkpoint model types each accepts.
MODEL_TYPES = {
    "llava": ("llava",),
    "qwen": ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
}
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Setting:
    """The declaration of one setting.

    Bounds and choices of a list setting (a tuple default) apply to each item.
    ``option`` is the command-line option: ``--`` and the name with dashes unless given
    (a few keep an older spelling, so the rules' commands stay as they were); ``None``
    where no command takes one (the workflow itself reads it, or the commands receive
    the values as inputs). ``from_run``: set by the run's entry (``model.type``), not by
    the stage's section.
    """

    name: str
    default: Any
    help: str
    changes_results: bool = True
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    option: str | None = ""
    from_run: bool = False

    def __post_init__(self) -> None:
        if self.option == "":
            object.__setattr__(self, "option", "--" + self.name.replace("_", "-"))

    @property
    def allowed(self) -> str:
        """The allowed values in words: ``"in (0, 1]"``, ``"at least 1"``, ``"one of a, b"``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.maximum is not None and self.exclusive_minimum is not None:
            return f"in ({self.exclusive_minimum}, {self.maximum}]"
        if self.maximum is not None and self.minimum is not None:
            return f"in [{self.minimum}, {self.maximum}]"
        if self.exclusive_minimum is not None:
            return f"above {self.exclusive_minimum}"
        if self.minimum is not None:
            return f"at least {self.minimum}"
        return ""

    def problem(self, value: Any, spell: Callable[[str], str]) -> str | None:
        """Why ``value`` is not allowed (named by ``spell(name)``), or ``None``."""
        for item in value if isinstance(self.default, tuple) else (value,):
            if self._allows(item):
                continue
            each = "each of " if isinstance(self.default, tuple) else ""
            return f"{each}{spell(self.name)} must be {self.allowed}, got {item}"
        return None

    def _allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True  # not a number: the schema or argparse checks its type
        return ((self.minimum is None or value >= self.minimum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.maximum is None or value <= self.maximum))


def setting(help_text: str, default: Any = dataclasses.MISSING, **declaration: Any) -> Any:
    """A field of a stage's dataclass with its declaration (see :class:`Setting`)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **declaration})


@dataclasses.dataclass(frozen=True)
class ValidateSettings:
    """What a sample must satisfy (``validate``); ``allow_duplicate_ids`` keeps repeated
    ids valid."""

    decode_images: bool = setting(
        "Fully decode every image (finds truncated files); off = header checks only.", True)
    min_image_side: int = setting("Smallest image side in pixels (Qwen-VL needs 28).", 28,
                                  minimum=1)
    max_aspect_ratio: float = setting("Largest long/short side ratio of an image.", 200.0,
                                      exclusive_minimum=1)
    allow_duplicate_ids: bool = setting(
        "Report repeated ids without invalidating their samples.", False)

    SPEED: ClassVar[tuple[Setting, ...]] = (
        Setting("shards", 1, "Validation jobs per run; the report is the same whatever the"
                " number.", changes_results=False, minimum=1, option=None),
    )


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    """Which valid samples ``filter`` keeps."""

    keep_text_only: bool = setting(
        "Keep valid samples without images (off: image samples only, as in the paper).",
        False)


@dataclasses.dataclass(frozen=True)
class ExtractSettings:
    """The settings that determine a shard's numbers (and hence its store key).

    After :meth:`resolved`, ``dtype`` is never ``"auto"``: the same configuration gives
    bfloat16 on a GPU and float32 on a CPU, which are different results.
    """

    model_type: str = setting("Model family (qwen: Qwen2-VL, Qwen2.5-VL, Qwen3-VL).",
                              choices=tuple(MODEL_TYPES), from_run=True)
    attention_threshold: float = setting("Attention mass tau of the kept vision tokens.", 0.9,
                                         exclusive_minimum=0, maximum=1)
    dtype: str = setting("Model dtype; auto = bfloat16 on GPU, float32 on CPU.", "auto",
                         choices=DTYPES)
    # 16: no supported chat template holds an image and an instruction in fewer tokens,
    # so a shorter limit can only be a mistake.
    max_length: int = setting("Longest sequence; longer conversations lose trailing turns.",
                              4096, minimum=16)
    min_image_tokens: int = setting("Qwen-VL: fewest vision tokens per image.", 256, minimum=1)
    max_image_tokens: int = setting("Qwen-VL: most vision tokens per image.", 576, minimum=1)
    trust_remote_code: bool = setting("Let the model repository run its own code.", False)
    layer: int = setting("Decoder layer L (1-based) of the representation; 1 = the"
                         " method's first layer.", 1, minimum=1)

    SPEED: ClassVar[tuple[Setting, ...]] = (
        Setting("shards", 4, "Extraction jobs (shards) per run; each writes one shard.",
                changes_results=False, minimum=1, option=None),
        Setting("batch_size", 8, "Samples per forward pass.", changes_results=False,
                minimum=1),
        Setting("num_workers", 2, "DataLoader processes decoding and encoding samples.",
                changes_results=False, minimum=0),
        Setting("gpus", 0, "GPUs (processes) per extract job; 0 = one process on the"
                " visible device.", changes_results=False, minimum=0, option=None),
        Setting("chunk_size", 512, "Samples per checkpoint chunk (at most this much work is"
                " lost when killed).", changes_results=False, minimum=1),
        Setting("cache_dirs", ("results/.cache/extract",), "Feature stores: look-ups search"
                " every one, new results go to the first writable one.",
                changes_results=False, option="--cache-dir"),
    )
    # Pairs (a, b) of settings whose values must satisfy a <= b.
    ORDERED: ClassVar[tuple[tuple[str, str], ...]] = (("min_image_tokens", "max_image_tokens"),)

    def resolved(self, dtype: str) -> ExtractSettings:
        """A copy with ``dtype`` resolved for the device (``"bfloat16"``, ...)."""
        return dataclasses.replace(self, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """The rank threshold and the preprocessing of scoring (METHOD.md stage 2)."""

    sv_threshold: float = setting("Cumulative spectral energy that fixes the rank k.", 0.9,
                                  exclusive_minimum=0, maximum=1)
    center: bool = setting("Centre feature columns (the paper's setting).", True)
    standardize: bool = setting("Divide columns by their standard deviation.", False)
    l2_normalize: bool = setting("L2-normalise rows after centring/standardising.", False)


@dataclasses.dataclass(frozen=True)
class SelectSettings:
    """The subsets a run selects. The commands receive budgets, seeds and methods as the
    workflow resolved them (inputs, not options)."""

    budgets: tuple[int | str, ...] = setting(
        "Subset sizes: sample counts, or percentages of the scored samples (\"16%\").",
        (100000,), minimum=1, option=None)
    random_seeds: tuple[int, ...] = setting("Seeds of the random baseline subsets.", (0,),
                                            minimum=0, option=None)
    methods: tuple[str, ...] = setting(
        "Selections made and compared per budget: scalselect (top-N, always made), random"
        " (one per seed), kcenter, kmeans.",
        ("scalselect", "random"), choices=tuple(METHODS),
        option=None)
    kmeans_clusters: int = setting("Number of k-means clusters K of the kmeans method.", 100,
                                   minimum=1)
    kmeans_seed: int = setting("Seed of the k-means++ initialisation of the kmeans method.", 0,
                               minimum=0)

    SPEED: ClassVar[tuple[Setting, ...]] = (
        Setting("export", (), "Trainer formats each top-N selection is also written in:"
                " llava, sharegpt (with a LLaMA-Factory entry), ids.", changes_results=False,
                choices=("llava", "sharegpt", "ids"), option=None),
    )


@dataclasses.dataclass(frozen=True)
class PlotSettings:
    """The figures' files and the attention gallery."""

    formats: tuple[str, ...] = setting("File formats of every figure.", ("pdf", "png"),
                                       choices=("pdf", "png", "svg"))
    dpi: int = setting("Resolution of PNG figures.", 300, minimum=50, maximum=1200)
    gallery_samples: int = setting(
        "Highest- and lowest-scored samples in the attention gallery (each row).", 4,
        minimum=1, maximum=8, option="--samples")


# Configuration section -> its declaration.
STAGES: dict[str, type] = {
    "validate": ValidateSettings,
    "filter": FilterSettings,
    "extract": ExtractSettings,
    "score": ScoreSettings,
    "select": SelectSettings,
    "plots": PlotSettings,
}

StageSettings = TypeVar("StageSettings")


def declared(stage: type) -> dict[str, Setting]:
    """Every setting ``stage`` declares, by name: its fields, then its speed settings."""
    fields = {f.name: Setting(f.name, f.default, **f.metadata) for f in dataclasses.fields(stage)}
    return {**fields, **{s.name: s for s in getattr(stage, "SPEED", ())}}


def result_keys(stage: str) -> tuple[str, ...]:
    """The keys of configuration section ``stage`` that change results, in declaration
    order: what the rules pass as params (``cli_options(stage, *result_keys(stage))``)."""
    return tuple(name for name, s in declared(STAGES[stage]).items()
                 if s.changes_results and not s.from_run)


def _problems(stage: type, values: Mapping[str, Any], spell: Callable[[str], str]) -> list[str]:
    settings = declared(stage)
    found = [settings[name].problem(value, spell) for name, value in values.items()
             if name in settings]
    for low, high in getattr(stage, "ORDERED", ()):
        if low in values and high in values and values[low] > values[high]:
            found.append(f"{spell(low)} ({values[low]}) is larger than"
                         f" {spell(high)} ({values[high]})")
    return [problem for problem in found if problem]


def config_problems(stage: str, values: Mapping[str, Any]) -> list[str]:
    """Values of configuration section ``stage`` outside their declared range or choices,
    and broken relations between them (``extract.min_image_tokens`` above
    ``extract.max_image_tokens``), one message each, keys named ``<stage>.<key>``."""
    return _problems(STAGES[stage], values, lambda name: f"{stage}.{name}")


def value_problems(stage: type, **values: Any) -> list[str]:
    """The same checks for settings given by name (``min_image_tokens=...``), named as
    given: for library code that takes settings as arguments."""
    return _problems(stage, values, str)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, stage: type,
                  *names: str) -> None:
    """One option per setting of ``stage`` in ``names`` (``--attention-threshold`` ...);
    without names, every declared setting that has an option."""
    settings = declared(stage)
    for name in names or [n for n, s in settings.items() if s.option]:
        s = settings[name]
        options: dict[str, Any] = {"dest": name, "help": s.help}
        if s.default is dataclasses.MISSING:
            options.update(required=True, choices=s.choices)
        elif isinstance(s.default, bool):
            options.update(action=argparse.BooleanOptionalAction, default=s.default)
        elif isinstance(s.default, tuple):
            options.update(nargs="+", type=type(s.default[0]), default=s.default,
                           choices=s.choices)
        else:
            options.update(type=type(s.default), default=s.default, choices=s.choices)
        parser.add_argument(s.option, **options)


def from_arguments(stage: type[StageSettings], args: argparse.Namespace) -> StageSettings:
    """The ``stage`` settings of parsed options (a field without an option here keeps its
    default); a value out of its range is a ``UserError``, naming the option."""
    settings = declared(stage)
    # argparse gives lists; the settings are frozen, their lists tuples.
    parsed = {name: tuple(value) if isinstance(value, list) else value
              for name in settings if (value := getattr(args, name, None)) is not None}
    problems = _problems(stage, parsed, lambda name: settings[name].option or name)
    if problems:
        raise UserError("; ".join(problems))
    return stage(**{f.name: parsed[f.name] for f in dataclasses.fields(stage) if f.name in parsed})
