# Stage 1 (METHOD.md): the first-layer representation of every sample, one job per
# shard. Only result-affecting settings are params; batch size, workers, GPUs, chunk size
# and the feature store are resources, so changing them does not rerun finished shards.
# Each job seeks to its shard's records of the filtered file (by the index `filter`
# writes), reads nothing else, and runs the model only on samples the stores
# (cache_dirs, keyed by sample content) do not hold yet.
# The job then computes the shard's moments for scoring (score-partial) from the features
# it has just written: one queue wait less on SLURM than a job of their own.


rule extract:
    input:
        dataset=filtered_dataset,
        index=filtered_index,
        model=model_input,
    output:
        shard=directory("results/{run}/extract/shard-{i}-of-{n}"),
        partial="results/{run}/score/partials/shard-{i}-of-{n}.npz",
    log:
        "results/{run}/logs/extract/shard-{i}-of-{n}.log",
    benchmark:
        "results/{run}/benchmarks/extract/shard-{i}-of-{n}.tsv"
    wildcard_constraints:
        i=r"\d+",
        n=r"\d+",
    conda:
        "../envs/extract.yaml"
    resources:
        # 0 or 1: one process on the visible device(s); N >= 2: one process per GPU.
        gpu=extract_setting("gpus"),
        cpus_per_gpu=8,
        mem_mb=32000,
        runtime=720,
        batch_size=extract_setting("batch_size"),
        num_workers=extract_setting("num_workers"),
        chunk_size=extract_setting("chunk_size"),
        cache_dirs=extract_cache_dirs,
    params:
        model=model_value("path"),
        model_type=model_value("type"),
        image_root=run_value("image_root"),
        options=cli_options("extract", *result_keys("extract")),
    shell:
        # The devices the scheduler gave this job, first line of the log. One process per
        # GPU (0: one process on the visible device); a failed process's own error is
        # logged once, without the launcher's traceback.
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}} > {log};"
        " python -m scalselect.launch --processes {resources.gpu}"
        " extract --model {params.model}"
        " --model-type {params.model_type} --dataset {input.dataset} --index {input.index}"
        " --image-root {params.image_root} --out {output.shard}"
        " --shard {wildcards.i} --num-shards {wildcards.n} {params.options}"
        " --batch-size {resources.batch_size} --num-workers {resources.num_workers}"
        " --chunk-size {resources.chunk_size} --cache-dir {resources.cache_dirs}"
        " >> {log} 2>&1;"
        # NumPy, as on the CPU node that computed the moments before: the GPU node's
        # torch would round float64 sums differently.
        f" OMP_NUM_THREADS={SCORE_THREADS} python -m scalselect score-partial"
        " --backend numpy --features {output.shard}"
        " --out {output.partial} >> {log} 2>&1"
