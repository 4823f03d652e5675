"""A worker runs a job: the worker itself, the fixed stages of a generation, the pipeline call, previews,
the streaming decode, speed options and LoRA adapters."""
