"""Real peer servers (NVIDIA Triton) that modelgate is tested and measured against."""
