# The bundled demo dataset and tiny models, generated deterministically.


rule demo:
    output:
        dataset="resources/demo/dataset.json",
        images=directory("resources/demo/images"),
    log:
        "logs/demo.log",
    benchmark:
        "benchmarks/demo.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python scripts/make_demo.py --out resources/demo > {log} 2>&1"
