# Paper figures and tables (results/{run}/plots, results/compare/{group}), each figure
# in the report with its caption. Split by inputs: a new budget or random seed redraws
# only `plots` and `plots_compare`; the score, spectrum and gallery figures stay.


# The sources of every run, most frequent first: each keeps one colour in all the runs'
# figures and browsers. From the validation reports alone (seconds), where Snakemake runs.
localrules:
    sources,


rule sources:
    input:
        reports=expand("results/{run}/validate/report.json", run=RUNS),
    output:
        sources="results/sources.json",
    log:
        "results/logs/sources.log",
    benchmark:
        "results/benchmarks/sources.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        runs=source_runs,
    shell:
        "python -m scalselect sources {params.runs} --out {output.sources} > {log} 2>&1"


rule plots_scores:
    input:
        scores="results/{run}/score/scores.parquet",
        spectrum="results/{run}/score/spectrum.json",
    output:
        histogram=figure_files(
            "results/{run}/plots/score_histogram", "score_histogram.rst", "Scores"
        ),
        violin=figure_files(
            "results/{run}/plots/score_violin", "score_violin.rst", "Scores"
        ),
        spectrum=figure_files("results/{run}/plots/spectrum", "spectrum.rst", "Scores"),
    log:
        "results/{run}/logs/plots/scores.log",
    benchmark:
        "results/{run}/benchmarks/plots/scores.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        options=plot_options,
    shell:
        "python -m scalselect plot scores --scores {input.scores}"
        " --spectrum {input.spectrum} --out-dir results/{wildcards.run}/plots"
        " {params.options} > {log} 2>&1"


rule plots:
    input:
        scores="results/{run}/score/scores.parquet",
        summary="results/{run}/select/summary.csv",
        dataset=filtered_dataset,
        sources="results/sources.json",
    output:
        ranking=figure_files(
            "results/{run}/plots/score_ranking", "score_ranking.rst", "Budgets"
        ),
        cumulative=figure_files(
            "results/{run}/plots/score_cumulative", "score_cumulative.rst", "Budgets"
        ),
        distribution=figure_files(
            "results/{run}/plots/score_distribution",
            "score_distribution.rst",
            "Budgets",
        ),
        composition=figure_files(
            "results/{run}/plots/composition", "composition.rst", "Budgets"
        ),
        budgets=report(
            "results/{run}/plots/budgets.csv",
            caption="../report/budgets.rst",
            category="{run}",
            subcategory="Budgets",
            labels={"figure": "budget table"},
        ),
        budgets_tex="results/{run}/plots/budgets.tex",
        shares="results/{run}/plots/composition.csv",
    log:
        "results/{run}/logs/plots/budgets.log",
    benchmark:
        "results/{run}/benchmarks/plots/budgets.tsv"
    conda:
        "../envs/plots.yaml"
    params:
        options=plot_options,
        seeds=cli_options("select", "random_seeds"),
        dataset=run_options("format", "source_field"),
    shell:
        "python -m scalselect plot budgets --scores {input.scores}"
        " --summary {input.summary} --out-dir results/{wildcards.run}/plots"
        " {params.options} > {log} 2>&1;"
        " python -m scalselect plot composition --dataset {input.dataset}"
        " {params.dataset} --scores {input.scores} --summary {input.summary}"
        " {params.seeds} --sources {input.sources}"
        " --out-dir results/{wildcards.run}/plots {params.options}"
        " >> {log} 2>&1"


rule plots_gallery:
    input:
        scores="results/{run}/score/scores.parquet",
        dataset=filtered_dataset,
        model=model_input,
    output:
        gallery=figure_files(
            "results/{run}/plots/attention_gallery",
            "attention_gallery.rst",
            "Attention",
        ),
        tokens=directory("results/{run}/plots/attention_tokens"),
    log:
        "results/{run}/logs/plots/gallery.log",
    benchmark:
        "results/{run}/benchmarks/plots/gallery.tsv"
    conda:
        "../envs/plots_gallery.yaml"
    resources:
        gpu=gallery_gpus,
        mem_mb=32000,
    params:
        options=plot_options,
        samples=gallery_setting,
        model=model_value("path"),
        model_type=model_value("type"),
        image_root=run_value("image_root"),
        dataset=run_options("format"),
        extract=cli_options("extract", *result_keys("extract")),
    shell:
        "python -m scalselect plot gallery --dataset {input.dataset} {params.dataset}"
        " --image-root {params.image_root} --scores {input.scores}"
        " --model {params.model} --model-type {params.model_type}"
        " --samples {params.samples} {params.extract}"
        " --out-dir results/{wildcards.run}/plots {params.options} > {log} 2>&1"


rule plots_compare:
    input:
        scores=comparison_inputs("scores"),
        datasets=comparison_inputs("dataset"),
    output:
        overlap=figure_files(
            "results/compare/{group}/overlap", "overlap.rst", "{group}"
        ),
        agreement=figure_files(
            "results/compare/{group}/rank_agreement", "rank_agreement.rst", "{group}"
        ),
        table=report(
            "results/compare/{group}/comparison.csv",
            caption="../report/comparison.rst",
            category="Across runs",
            subcategory="{group}",
            labels={"figure": "comparison table"},
        ),
        table_tex="results/compare/{group}/comparison.tex",
    log:
        "results/compare/{group}/logs/plots_compare.log",
    benchmark:
        "results/compare/{group}/benchmarks/plots_compare.tsv"
    wildcard_constraints:
        group="|".join(map(re.escape, PLAN.comparison_groups())) or "(?!)",
    conda:
        "../envs/plots.yaml"
    params:
        runs=comparison_runs,
        budgets=group_budget_options(PLAN.comparison_groups),
        options=plot_options,
    shell:
        "python -m scalselect plot-compare {params.runs} {params.budgets}"
        " --out-dir results/compare/{wildcards.group} {params.options} > {log} 2>&1"


# Training-free comparison of the run's selection methods (select.methods) per budget.
rule plots_methods:
    input:
        dataset=filtered_dataset,
        scores="results/{run}/score/scores.parquet",
        model="results/{run}/score/model.npz",
        shards=run_shards,
        picks=baseline_picks,
        sources="results/sources.json",
    output:
        figure=figure_files("results/{run}/plots/methods", "methods.rst", "Methods"),
        table=report(
            "results/{run}/plots/methods.csv",
            caption="../report/methods_table.rst",
            category="{run}",
            subcategory="Methods",
            labels={"figure": "methods table"},
        ),
        table_tex="results/{run}/plots/methods.tex",
    log:
        "results/{run}/logs/plots/methods.log",
    benchmark:
        "results/{run}/benchmarks/plots/methods.tsv"
    conda:
        "../envs/plots.yaml"
    resources:
        gpu=gallery_gpus,
        mem_mb=shards_mem_mb,
    params:
        options=plot_options,
        budgets=budget_options,
        seeds=seed_options,
        dataset=run_options("format", "source_field"),
    shell:
        "python -m scalselect plot-methods --dataset {input.dataset} {params.dataset}"
        " --features {input.shards} --model {input.model} --scores {input.scores}"
        " {params.budgets} {params.seeds} --picks {input.picks}"
        " --sources {input.sources}"
        " --out-dir results/{wildcards.run}/plots {params.options} > {log} 2>&1"


# Layer ablation: runs that differ only in extract.layer.
rule plots_layers:
    input:
        spectra=layer_inputs("spectrum"),
        scores=layer_inputs("scores"),
    output:
        figure=figure_files(
            "results/layers/{group}/layer_ablation", "layer_ablation.rst", "{group}"
        ),
        table="results/layers/{group}/layer_ablation.csv",
        table_tex="results/layers/{group}/layer_ablation.tex",
    log:
        "results/layers/{group}/logs/plots_layers.log",
    benchmark:
        "results/layers/{group}/benchmarks/plots_layers.tsv"
    wildcard_constraints:
        group="|".join(map(re.escape, PLAN.layer_groups())) or "(?!)",
    conda:
        "../envs/plots.yaml"
    params:
        runs=layer_runs,
        budgets=group_budget_options(PLAN.layer_groups),
        options=plot_options,
    shell:
        "python -m scalselect plot-layers {params.runs} {params.budgets}"
        " --out-dir results/layers/{wildcards.group} {params.options} > {log} 2>&1"
