"""ScalSelect: training-free, linear-time selection of visual-instruction-tuning data.

Modules are named after the method's ideas:

- ``dataset``: reading ShareGPT / LLaVA-format datasets into one normalised view.
- ``validation``: per-sample checks of records and images (the ``validate`` stage).
- ``representation``: instruction-conditioned early representations (stage 1).
- ``features``: the on-disk shard format of the representations.
- ``leverage``: rank-k leverage (CUR) importance scores (stage 2).
- ``selection``: top-N and random subsets (stage 3).
- ``figures``: paper-ready figures.

Every stage also runs as ``python -m scalselect <stage>``.
"""

__version__ = "0.1.0"
