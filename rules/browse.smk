# The selection browser (results/{run}/browse/index.html): every scored sample in rank
# order with the selections that keep it, a static page that opens from the filesystem
# and in the report (`snakemake --report report.zip`).


rule browse:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        # The top-N and random-N subsets are recomputed from the scores as `select`
        # makes them; only the baselines' picks are read.
        picks=baseline_picks,
        sources="results/sources.json",
    output:
        browse=report(
            directory("results/{run}/browse"),
            htmlindex="index.html",
            caption="../report/browse.rst",
            category="{run}",
            subcategory="Browser",
            labels={"figure": "selection browser"},
        ),
    log:
        "results/{run}/logs/browse.log",
    benchmark:
        "results/{run}/benchmarks/browse.tsv"
    conda:
        "../envs/browse.yaml"
    params:
        image_root=run_value("image_root"),
        dataset=run_options("format", "source_field"),
        budgets=budget_options,
        seeds=seed_options,
    shell:
        "python -m scalselect browse --dataset {input.dataset} {params.dataset}"
        " --image-root {params.image_root} --scores {input.scores} {params.budgets}"
        " {params.seeds} --picks {input.picks} --sources {input.sources}"
        " --run {wildcards.run}"
        " --out {output.browse} > {log} 2>&1"
