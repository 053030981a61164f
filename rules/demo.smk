# The bundled demo dataset (ShareGPT and LLaVA formats, parquet, images) and tiny models,
# generated deterministically by one job. Seconds, whatever the cluster: on SLURM it runs
# where Snakemake runs instead of waiting in a queue before validate.


localrules:
    demo,


rule demo:
    input:
        # The builders: editing them rebuilds the demo (and reruns what depends on it).
        builder="scalselect/demo/build.py",
        drawings="scalselect/demo/drawings.py",
        models="scalselect/demo/tinymodels.py",
    output:
        dataset="resources/demo/dataset.json",
        dataset_llava="resources/demo/dataset_llava.json",
        parquet="resources/demo/dataset.parquet",
        groups="resources/demo/groups.json",
        expected_invalid="resources/demo/EXPECTED_INVALID.json",
        images=directory("resources/demo/images"),
        llava=directory("resources/demo/models/tiny-llava"),
        qwen=directory("resources/demo/models/tiny-qwen3-vl"),
    # Under the ignored resources/, so that no file the workflow writes dirties git status.
    log:
        "resources/logs/demo.log",
    benchmark:
        "resources/benchmarks/demo.tsv"
    conda:
        "../envs/demo.yaml"
    shell:
        "python scripts/make_demo.py --out resources/demo > {log} 2>&1"
