"""What a run leaves on disk: run directories, checkpoints, output folders."""
