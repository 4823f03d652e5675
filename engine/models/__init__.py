"""Which weights, where they live and how they load: the tiny offline models, what can load here, the
weight files and their storage, the memory plan and placement, loading into a pipeline."""
