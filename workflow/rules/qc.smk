rule cohort_qc:
    input:
        adapter_qc=f"{RESULTS}/{{cohort}}/qc/adapter.parquet",
        stores=lambda w: cohort_stores(w.cohort),
    output:
        qc=f"{RESULTS}/{{cohort}}/qc.parquet",
        summary=f"{RESULTS}/{{cohort}}/stage1_summary.md",
    log:
        f"{RESULTS}/{{cohort}}/logs/cohort_qc.log",
    conda:
        "../../envs/cohort.yaml"
    script:
        "../scripts/cohort_qc.py"
