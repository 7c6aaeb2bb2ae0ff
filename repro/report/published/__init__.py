"""Published reference numbers of the seed papers: one YAML file per paper (see repro.report.papers)."""
