rule cohort_qc:
    input:
        adapter_qc=L.adapter_qc(),
        stores=lambda w: cohort_stores(w.cohort),
    output:
        qc=L.cohort_qc(),
        summary=L.stage1_summary(),
    params:
        code=mmparams.code_key("report/stage1"),
    log:
        L.log("cohort_qc"),
    conda:
        "../../envs/cohort.yaml"
    script:
        "../scripts/cohort_qc.py"
