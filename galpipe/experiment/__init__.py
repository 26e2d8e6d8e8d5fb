"""The experiment as plain code: the protocol (pretrain, fine-tune one task x label budget,
choose the champion), the fine-tuning strategies and the label selections. The Dagster assets,
the CLI and the benchmarks all call these; nothing here knows of Dagster."""
