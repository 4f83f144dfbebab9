"""Episodes and latents on disk, the samplers over them, and the processes that
collect them."""
