"""The datasets, loaded whole into memory as uint8 tensors."""
