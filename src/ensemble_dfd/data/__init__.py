"""Dataset creation and reading: frames, faces, manifests, image quality."""
