"""Several processes training one model: torchrun launching, process groups, DDP replicas."""
