# Selection (METHOD.md stage 3): any top-N, random-N, kcenter-N or kmeans-N file is a
# target of its own, so new budgets or methods run only these rules (and the methods
# comparison). Samples are matched by dataset index (scores.parquet).
# A selection named .jsonl is JSON Lines, .parquet parquet (from a parquet dataset), .json a
# JSON array (the run's dataset decides which the default target asks for). A baseline's
# picks table is named after its selection, <method>-<N>.<ext>.picks.parquet
# (scalselect.methods.picks_name): every output of a rule has the same wildcards.
# Beside every selection, its card <selection>.card.json (scalselect.select.card), written
# by the same job from the run's digests table, spectrum and shard manifests; the cards
# are in the report.


# The content digests of the run's records, once per run, for the cards.
rule select_digests:
    input:
        dataset=dataset_inputs,
        filtered=filtered_dataset,
    output:
        digests="results/{run}/select/digests.parquet",
    log:
        "results/{run}/logs/select/digests.log",
    benchmark:
        "results/{run}/benchmarks/select/digests.tsv"
    conda:
        "../envs/data.yaml"
    params:
        dataset=run_value("dataset"),
        image_root=run_value("image_root"),
        dataset_options=run_options("format", "source_field"),
    shell:
        "python -m scalselect digests --dataset {params.dataset:q} --filtered {input.filtered}"
        " --image-root {params.image_root} {params.dataset_options} --out {output.digests}"
        " > {log} 2>&1"


rule select:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        digests=run_digests,
        spectrum="results/{run}/score/spectrum.json",
        card_shards=run_shards,
    output:
        selection="results/{run}/select/top-{N}.{ext}",
        card=card_file("results/{run}/select/top-{N}.{ext}"),
    log:
        "results/{run}/logs/select/top-{N}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/top-{N}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?|parquet",
    conda:
        "../envs/data.yaml"
    params:
        card=card_options("scalselect"),
    shell:
        "python -m scalselect select --dataset {input.dataset} --scores {input.scores}"
        " --num {wildcards.N} --out {output.selection} {params.card} > {log} 2>&1"


rule select_random:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        digests=run_digests,
        spectrum="results/{run}/score/spectrum.json",
        card_shards=run_shards,
    output:
        selection="results/{run}/select/random-{N}-seed{seed}.{ext}",
        card=card_file("results/{run}/select/random-{N}-seed{seed}.{ext}"),
    log:
        "results/{run}/logs/select/random-{N}-seed{seed}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/random-{N}-seed{seed}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?|parquet",
        seed=r"\d+",
    conda:
        "../envs/data.yaml"
    params:
        card=card_options("random"),
    shell:
        "python -m scalselect select --dataset {input.dataset} --scores {input.scores}"
        " --num {wildcards.N} --random --seed {wildcards.seed}"
        " --out {output.selection} {params.card} > {log} 2>&1"


rule select_summary:
    input:
        scores="results/{run}/score/scores.parquet",
        selections=selection_files,
    output:
        summary="results/{run}/select/summary.csv",
    log:
        "results/{run}/logs/select/summary.log",
    benchmark:
        "results/{run}/benchmarks/select/summary.tsv"
    conda:
        "../envs/data.yaml"
    params:
        budgets=budget_options,
    shell:
        "python -m scalselect select-summary --scores {input.scores} {params.budgets}"
        " --out {output.summary} > {log} 2>&1"


# Baseline selectors on the run's representations, preprocessed as for scoring.
rule select_kcenter:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        model="results/{run}/score/model.npz",
        shards=run_shards,
        digests=run_digests,
        spectrum="results/{run}/score/spectrum.json",
        card_shards=run_shards,
    output:
        selection="results/{run}/select/kcenter-{N}.{ext}",
        picks="results/{run}/select/kcenter-{N}.{ext}.picks.parquet",
        card=card_file("results/{run}/select/kcenter-{N}.{ext}"),
    log:
        "results/{run}/logs/select/kcenter-{N}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/kcenter-{N}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?|parquet",
    conda:
        "../envs/cur.yaml"
    threads: 4
    resources:
        # On a GPU when there is one.
        gpu=gallery_gpus,
        mem_mb=shards_mem_mb,
    params:
        card=card_options("kcenter"),
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect select-baseline --method kcenter"
        " --dataset {input.dataset} --features {input.shards} --model {input.model}"
        " --scores {input.scores} --num {wildcards.N} --out {output.selection}"
        " --picks {output.picks} {params.card} > {log} 2>&1"


# k-means is fitted once per run; each budget only takes its shares of the clusters.
rule select_kmeans_clusters:
    input:
        scores="results/{run}/score/scores.parquet",
        model="results/{run}/score/model.npz",
        shards=run_shards,
    output:
        clusters="results/{run}/select/kmeans-clusters.parquet",
    log:
        "results/{run}/logs/select/kmeans-clusters.log",
    benchmark:
        "results/{run}/benchmarks/select/kmeans-clusters.tsv"
    conda:
        "../envs/cur.yaml"
    # scikit-learn's k-means runs on a fixed 4 threads (scalselect.select.baselines.KMEANS_THREADS).
    threads: 4
    resources:
        mem_mb=shards_mem_mb,
    params:
        options=cli_options("select", *KMEANS_KEYS),
    shell:
        "python -m scalselect kmeans-clusters --features {input.shards} --model {input.model}"
        " --scores {input.scores} {params.options} --out {output.clusters} > {log} 2>&1"


rule select_kmeans:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        clusters="results/{run}/select/kmeans-clusters.parquet",
        digests=run_digests,
        spectrum="results/{run}/score/spectrum.json",
        card_shards=run_shards,
    output:
        selection="results/{run}/select/kmeans-{N}.{ext}",
        picks="results/{run}/select/kmeans-{N}.{ext}.picks.parquet",
        card=card_file("results/{run}/select/kmeans-{N}.{ext}"),
    log:
        "results/{run}/logs/select/kmeans-{N}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/kmeans-{N}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?|parquet",
    conda:
        "../envs/data.yaml"
    params:
        card=card_options("kmeans"),
    shell:
        "python -m scalselect select-baseline --method kmeans --dataset {input.dataset}"
        " --scores {input.scores} --clusters {input.clusters} --num {wildcards.N}"
        " --out {output.selection} --picks {output.picks} {params.card} > {log} 2>&1"


# Exports of the top-N selections for training (select.export): a folder each.
rule select_export:
    input:
        selection=top_selection,
    output:
        export=directory("results/{run}/export/top-{N}-{format}"),
    log:
        "results/{run}/logs/export/top-{N}-{format}.log",
    benchmark:
        "results/{run}/benchmarks/export/top-{N}-{format}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        format="|".join(EXPORTS),
    conda:
        "../envs/data.yaml"
    params:
        dataset=run_options("format"),
    shell:
        "python -m scalselect export {input.selection} --to {wildcards.format}"
        " {params.dataset} --out {output.export} > {log} 2>&1"
