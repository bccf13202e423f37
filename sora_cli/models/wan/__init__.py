"""The Wan 2.1/2.2 networks: the diffusion transformer and the causal video VAE, in diffusers' layout and key names."""
