"""The networks: diffusion transformer, video VAE and text encoder, one module each."""
