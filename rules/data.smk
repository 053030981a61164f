# Data stages: check every sample and image, then keep the valid samples.


rule validate:
    input:
        dataset=run_value("dataset"),
    output:
        report="results/{run}/validate/report.json",
    log:
        "results/{run}/logs/validate.log",
    benchmark:
        "results/{run}/benchmarks/validate.tsv"
    conda:
        "../envs/data.yaml"
    threads: 8
    params:
        image_root=run_value("image_root"),
        dataset_options=run_options("format", "source_field"),
        options=cli_options(
            "validate",
            "decode_images",
            "min_image_side",
            "max_aspect_ratio",
            "allow_duplicate_ids",
        ),
    shell:
        "python -m scalselect validate --dataset {input.dataset}"
        " --image-root {params.image_root} --out {output.report}"
        " {params.dataset_options} {params.options} --workers {threads} > {log} 2>&1"


rule filter:
    input:
        dataset=run_value("dataset"),
        report="results/{run}/validate/report.json",
    output:
        # JSON Lines for a JSON Lines dataset, else a JSON array (`dataset_extension`).
        dataset="results/{run}/filter/dataset.{ext}",
    log:
        "results/{run}/logs/filter.{ext}.log",
    benchmark:
        "results/{run}/benchmarks/filter.{ext}.tsv"
    wildcard_constraints:
        ext="jsonl?",
    conda:
        "../envs/data.yaml"
    resources:
        # Checked here, before extraction; a resource, not a param: budgets do not
        # change the filtered dataset, so a new budget must not rerun everything.
        budgets=lambda wildcards: " ".join(
            map(shlex.quote, map(str, settings(wildcards.run, "select")["budgets"]))
        ),
    params:
        options=cli_options("filter", "keep_text_only"),
    shell:
        "python -m scalselect filter --dataset {input.dataset}"
        " --report {input.report} --out {output.dataset} {params.options}"
        " --budgets {resources.budgets} > {log} 2>&1"
