"""The training loop and what surrounds it: resume, divergence guard, several processes, bench."""
