rule cohort_qc:
    input:
        adapter_qc=L.adapter_qc(),
        stores=lambda w: cohort_stores(w.cohort),
    output:
        qc=L.cohort_qc(),
        summary=report(
            L.stage1_summary(),
            caption="../report/stage1.rst",
            category="Stage 1",
            subcategory="{cohort}",
        ),
    log:
        L.log("cohort_qc"),
    benchmark:
        L.benchmark("cohort_qc")
    conda:
        "../../envs/cohort.yaml"
    params:
        code=mmparams.code_key("report/stage1"),
    script:
        "../scripts/cohort_qc.py"
