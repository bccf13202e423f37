"""Training recipes for the embedded model `sora-tiny`: `sora train vae`, then `sora train dit`."""
