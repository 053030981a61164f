# Scoring (METHOD.md stage 2) as map-reduce over the extraction shards: per-shard
# moments, one reduce with the eigendecomposition, per-shard scores, a ranked merge.
# BLAS threads follow {threads}; they change nothing but float64 rounding.


rule cur_partial:
    input:
        shard="results/{run}/extract/shard-{i}-of-{n}",
    output:
        partial="results/{run}/score/partials/shard-{i}-of-{n}.npz",
    log:
        "results/{run}/logs/cur_partial/shard-{i}-of-{n}.log",
    benchmark:
        "results/{run}/benchmarks/cur_partial/shard-{i}-of-{n}.tsv"
    wildcard_constraints:
        i=r"\d+",
        n=r"\d+",
    conda:
        "../envs/cur.yaml"
    threads: 2
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect score-partial"
        " --features {input.shard} --out {output.partial} > {log} 2>&1"


rule cur:
    input:
        partials=score_partials,
        shards=score_second_pass,
    output:
        spectrum="results/{run}/score/spectrum.json",
        model="results/{run}/score/model.npz",
    log:
        "results/{run}/logs/cur.log",
    benchmark:
        "results/{run}/benchmarks/cur.tsv"
    conda:
        "../envs/cur.yaml"
    threads: 2
    params:
        options=cli_options(
            "score", "sv_threshold", "center", "standardize", "l2_normalize"
        ),
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect score-fit"
        " --partials {input.partials} --features {input.shards} {params.options}"
        " --spectrum {output.spectrum} --model {output.model} > {log} 2>&1"


rule cur_score:
    input:
        shard="results/{run}/extract/shard-{i}-of-{n}",
        model="results/{run}/score/model.npz",
    output:
        scores="results/{run}/score/parts/shard-{i}-of-{n}.parquet",
    log:
        "results/{run}/logs/cur_score/shard-{i}-of-{n}.log",
    benchmark:
        "results/{run}/benchmarks/cur_score/shard-{i}-of-{n}.tsv"
    wildcard_constraints:
        i=r"\d+",
        n=r"\d+",
    conda:
        "../envs/cur.yaml"
    threads: 2
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect score-apply"
        " --features {input.shard} --model {input.model} --out {output.scores}"
        " > {log} 2>&1"


# A checkpoint: percentage budgets become sample counts once the scored samples are known.
checkpoint cur_merge:
    input:
        parts=score_parts,
    output:
        scores="results/{run}/score/importance_scores.jsonl",
        table="results/{run}/score/scores.parquet",
    log:
        "results/{run}/logs/cur_merge.log",
    benchmark:
        "results/{run}/benchmarks/cur_merge.tsv"
    conda:
        "../envs/cur.yaml"
    shell:
        "python -m scalselect score-merge --parts {input.parts} --out {output.scores}"
        " > {log} 2>&1"
