# Selection (METHOD.md stage 3): any top-N or random-N file is a target of its own, so
# new budgets run only these rules. Samples are matched by dataset index (scores.parquet).
# A selection named .jsonl is JSON Lines, .json a JSON array (the run's dataset decides
# which the default target asks for).


rule select:
    input:
        dataset="results/{run}/filter/dataset.json",
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
        dataset="results/{run}/filter/dataset.json",
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
