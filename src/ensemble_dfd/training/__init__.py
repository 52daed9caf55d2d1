"""Training: the backbones (M1..M10), one model's plan (ModelPlan) and folder (ModelDir), the
training loop, tuning, memory and accelerators, the Dask cluster and experiment tracking."""
