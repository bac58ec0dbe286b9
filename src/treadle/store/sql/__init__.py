"""SQL implementations of the store protocols, one module per noun group."""
