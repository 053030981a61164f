# Data stages: check every sample and image, then keep the valid samples.


# The dataset is indexed once (where each record starts), checked in `validate.shards`
# jobs that seek to their records, and the parts merged into one report (the same bytes
# whatever the number of shards; repeated ids are found across the whole dataset).
rule validate_index:
    input:
        dataset=dataset_inputs,
    output:
        index="results/{run}/validate/index.npz",
    log:
        "results/{run}/logs/validate/index.log",
    benchmark:
        "results/{run}/benchmarks/validate/index.tsv"
    conda:
        "../envs/data.yaml"
    params:
        dataset=run_value("dataset"),
        # A remote dataset's size and ETag (or version): a changed object reruns the run.
        version=per_run(PLAN.dataset_version),
    shell:
        "python -m scalselect validate-index --dataset {params.dataset:q}"
        " --out {output.index} > {log} 2>&1"


rule validate_shard:
    input:
        dataset=dataset_inputs,
        index="results/{run}/validate/index.npz",
    output:
        part="results/{run}/validate/parts/shard-{shard}-of-{shards}.npz",
    log:
        "results/{run}/logs/validate/shard-{shard}-of-{shards}.log",
    benchmark:
        "results/{run}/benchmarks/validate/shard-{shard}-of-{shards}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    conda:
        "../envs/data.yaml"
    threads: 8
    params:
        dataset=run_value("dataset"),
        image_root=run_value("image_root"),
        dataset_options=run_options("format", "source_field"),
        # Not allow_duplicate_ids: repeated ids are found across shards, by the merge.
        options=cli_options(
            "validate",
            "decode_images",
            "min_image_side",
            "max_aspect_ratio",
        ),
    shell:
        "python -m scalselect validate --dataset {params.dataset:q} --index {input.index}"
        " --shard {wildcards.shard} --num-shards {wildcards.shards}"
        " --image-root {params.image_root} --out {output.part}"
        " {params.dataset_options} {params.options} --workers {threads}"
        " > {log} 2>&1"


rule validate:
    input:
        dataset=dataset_inputs,
        index="results/{run}/validate/index.npz",
        parts=validate_parts,
    output:
        report="results/{run}/validate/report.json",
    log:
        "results/{run}/logs/validate.log",
    benchmark:
        "results/{run}/benchmarks/validate.tsv"
    conda:
        "../envs/data.yaml"
    params:
        dataset=run_value("dataset"),
        image_root=run_value("image_root"),
        dataset_options=run_options("format"),
        options=cli_options("validate", *result_keys("validate")),
    shell:
        "python -m scalselect validate-merge --dataset {params.dataset:q}"
        " --index {input.index} --parts {input.parts}"
        " --image-root {params.image_root} --out {output.report}"
        " {params.dataset_options} {params.options} > {log} 2>&1"


rule filter:
    input:
        dataset=dataset_inputs,
        report="results/{run}/validate/report.json",
    output:
        # The dataset's file format: JSON Lines, parquet or a JSON array
        # (`dataset_extension`).
        dataset="results/{run}/filter/dataset.{ext}",
        # Where each record starts: an extract job seeks to its shard's records.
        index="results/{run}/filter/dataset.{ext}.index.npz",
    log:
        "results/{run}/logs/filter.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/filter.{ext}.tsv"
    wildcard_constraints:
        ext="jsonl?|parquet",
    conda:
        "../envs/data.yaml"
    resources:
        # Checked here, before extraction; resources, not params: budgets and shards do
        # not change the filtered dataset, so a new budget must not rerun everything.
        budgets=per_run(lambda run: shlex.join(map(str, PLAN.budgets(run)))),
        extract_shards=extract_setting("shards"),
    params:
        dataset=run_value("dataset"),
        options=cli_options("filter", *result_keys("filter")),
    shell:
        "python -m scalselect filter --dataset {params.dataset:q}"
        " --report {input.report} --out {output.dataset} --index {output.index}"
        " {params.options}"
        " --budgets {resources.budgets} --extract-shards {resources.extract_shards}"
        " > {log} 2>&1"
