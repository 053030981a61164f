# Selection (METHOD.md stage 3): any top-N, random-N, kcenter-N or kmeans-N file is a
# target of its own, so new budgets or methods run only these rules (and the methods
# comparison). Samples are matched by dataset index (scores.parquet).
# A selection named .jsonl is JSON Lines, .json a JSON array (the run's dataset decides
# which the default target asks for).


rule select:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
    output:
        selection="results/{run}/select/top-{N}.{ext}",
    log:
        "results/{run}/logs/select/top-{N}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/top-{N}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m scalselect select --dataset {input.dataset} --scores {input.scores}"
        " --num {wildcards.N} --out {output.selection} > {log} 2>&1"


rule select_random:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
    output:
        selection="results/{run}/select/random-{N}-seed{seed}.{ext}",
    log:
        "results/{run}/logs/select/random-{N}-seed{seed}.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/select/random-{N}-seed{seed}.{ext}.tsv"
    wildcard_constraints:
        N=r"[1-9]\d*",
        ext="jsonl?",
        seed=r"\d+",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m scalselect select --dataset {input.dataset} --scores {input.scores}"
        " --num {wildcards.N} --random --seed {wildcards.seed}"
        " --out {output.selection} > {log} 2>&1"


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
        budgets=cli_options("select", "budgets"),
    shell:
        "python -m scalselect select-summary --scores {input.scores} {params.budgets}"
        " --out {output.summary} > {log} 2>&1"


# Baseline selectors on the run's representations, preprocessed as for scoring.
rule select_baseline:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        model="results/{run}/score/model.npz",
        shards=run_shards,
    output:
        selection="results/{run}/select/{method}-{N}.json",
        picks="results/{run}/select/{method}-{N}.parquet",
    log:
        "results/{run}/logs/select/{method}-{N}.log",
    benchmark:
        "results/{run}/benchmarks/select/{method}-{N}.tsv"
    wildcard_constraints:
        method="|".join(BASELINES),
        N=r"[1-9]\d*",
    conda:
        "../envs/cur.yaml"
    threads: 4
    resources:
        # k-center runs on a GPU when there is one.
        gpu=gallery_gpus,
        mem_mb=features_mem_mb,
    params:
        options=baseline_options,
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect select-baseline"
        " --method {wildcards.method} --dataset {input.dataset}"
        " --features {input.shards} --model {input.model} --scores {input.scores}"
        " --num {wildcards.N} {params.options} --out {output.selection}"
        " --picks {output.picks} > {log} 2>&1"
