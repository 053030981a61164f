# ScalSelect: validate -> filter -> extract -> cur -> select -> plots and browse, once per configured run.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    run="|".join(map(re.escape, RUNS)),


include: "rules/demo.smk"
include: "rules/data.smk"
include: "rules/extract.smk"
include: "rules/cur.smk"
include: "rules/select.smk"
include: "rules/plots.smk"
include: "rules/browse.smk"


rule all:
    default_target: True
    input:
        PLAN.all_targets(),
        export_dirs,
