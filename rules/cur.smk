# Scoring (METHOD.md stage 2) as map-reduce over the extraction shards: the moments of
# each shard come from its extract job (rules/extract.smk); this one job merges them,
# eigendecomposes, scores every shard and ranks (score-shards: the files of score-fit,
# score-apply and score-merge run apart). One job, so that scoring waits in a SLURM queue
# once. BLAS threads follow SCORE_THREADS (rules/common.smk).


# A checkpoint: percentage budgets become sample counts once the scored samples are known.
checkpoint cur:
    input:
        partials=score_partials,
        shards=run_shards,
    output:
        spectrum="results/{run}/score/spectrum.json",
        model="results/{run}/score/model.npz",
        scores="results/{run}/score/importance_scores.jsonl",
        table="results/{run}/score/scores.parquet",
    log:
        "results/{run}/logs/cur.log",
    benchmark:
        "results/{run}/benchmarks/cur.tsv"
    conda:
        "../envs/cur.yaml"
    threads: SCORE_THREADS
    params:
        options=cli_options("score", *result_keys("score")),
    shell:
        "OMP_NUM_THREADS={threads} python -m scalselect score-shards"
        " --partials {input.partials} --features {input.shards} {params.options}"
        " --spectrum {output.spectrum} --model {output.model} --out {output.scores}"
        " > {log} 2>&1"
